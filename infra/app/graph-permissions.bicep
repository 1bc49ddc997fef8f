// Microsoft Graph application permissions (app role assignments) for the function app's
// managed identity, with the Microsoft Graph Bicep extension (alias in infra/bicepconfig.json).
//
// Deployed only when main.bicep's grantGraphPermissions is true. The person or pipeline running
// the deployment needs Privileged Role Administrator (or Global Administrator), or delegated
// AppRoleAssignment.ReadWrite.All with Application.Read.All: granting application permissions
// on Microsoft Graph is tenant-wide admin consent. Without that role, leave the parameter false
// and run infra/grant-graph-permissions.ps1 or .sh as someone who has it.
//
// Keep this list equal to the scripts' lists and docs/permissions.md
// (tests/unit/test_infra_settings.py checks it against monitors/graph/permissions.py).
//
// This module holds only what checkov cannot read: its Bicep parser (3.3.30) stops at the
// `extension` statement, and it has no checks for Microsoft.Graph resources anyway. Keeping the
// Graph extension here, apart from every Azure resource, leaves all of those parseable; `make
// checkov` skips this file and app/msp-app.bicep by path (infra/README.md, "checkov").

extension microsoftGraphV1

@description('Object id of the managed identity\'s service principal (the identity\'s principalId).')
param principalId string

@description('Also grant DeviceManagementManagedDevices.ReadWrite.All: the Intune report export (deployment report) has no read-only permission.')
param enableReportExport bool = true

@description('Object id of the write identity\'s service principal (remediation). Empty: no write identity, nothing granted for writes.')
param writePrincipalId string = ''

var graphAppId = '00000003-0000-0000-c000-000000000000'

var readPermissions = [
  'DeviceManagementConfiguration.Read.All' // device preparation policies and their ETG
  'DeviceManagementManagedDevices.Read.All' // managed devices: Entra device id, enrollment profile; script assignments
  'DeviceManagementApps.Read.All' // the apps a device preparation policy selects, and their assignments
  'GroupMember.Read.All' // ETG properties, owners, membership
  'Device.Read.All' // Entra device object ids
  'AuditLog.Read.All' // Add/Remove member to group events (with Directory.Read.All)
  'Directory.Read.All' // documented alongside AuditLog.Read.All for directory audits
  'Application.Read.All' // the Intune Provisioning Client service principal
  'Group.Read.All' // change-notification subscriptions on the ETGs (POST /subscriptions)
  'User.Read.All' // with GroupMember.Read.All: the enrolling user's groups, to pick the policy as Intune does
]
var reportExportPermissions = [
  'DeviceManagementManagedDevices.ReadWrite.All' // POST deviceManagement/reports/exportJobs
]
var permissions = enableReportExport ? concat(readPermissions, reportExportPermissions) : readPermissions
// The write identity's only permissions: group-post-members.md (a device member needs both)
// and group-post-owners.md (an owner needs Group.ReadWrite.All).
var writePermissions = [
  'GroupMember.ReadWrite.All' // POST /groups/{id}/members/$ref
  'Device.ReadWrite.All' // with GroupMember.ReadWrite.All when the member is a device
  'Group.ReadWrite.All' // POST /groups/{id}/owners/$ref (the provisioning client as ETG owner)
]

resource graphServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// App role ids by permission name, read from the tenant's Microsoft Graph service principal.
var graphAppRoleIds = toObject(graphServicePrincipal.appRoles, role => role.value, role => role.id)

resource graphAppRoleAssignments 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for permission in permissions: {
  principalId: principalId
  resourceId: graphServicePrincipal.id
  appRoleId: graphAppRoleIds[permission]
}]

resource graphWriteAppRoleAssignments 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for permission in (empty(writePrincipalId) ? [] : writePermissions): {
  principalId: writePrincipalId
  resourceId: graphServicePrincipal.id
  appRoleId: graphAppRoleIds[permission]
}]

output grantedPermissions array = permissions
output grantedWritePermissions array = empty(writePrincipalId) ? [] : writePermissions
