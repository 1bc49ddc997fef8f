// The multi-tenant app registration that is the monitor's identity in every customer tenant of
// the registry (docs/msp.md), with the Microsoft Graph Bicep extension (alias in
// infra/bicepconfig.json). Deployed only when main.bicep's mspMode is true.
//
// No secret or certificate exists: the app's only credential is a federated identity
// credential trusting the function app's user-assigned managed identity ("Configure an
// application to trust a managed identity"): issuer the home tenant's
// https://login.microsoftonline.com/{tenant}/v2.0, subject the identity's object (principal)
// id, audience api://AzureADTokenExchange. At run time the app asks the managed identity for a
// token for api://AzureADTokenExchange and presents it as the client assertion to the customer
// tenant (azure-identity ClientAssertionCredential; monitors/tenants/credential.py). That
// document requires a user-assigned identity, the app and the identity in the same tenant, and
// a multitenant app provisioned in each other tenant: the admin consent of each customer.
//
// requiredResourceAccess lists the Graph application permissions the monitor reads with
// (type Role). It grants nothing by itself: it is what each customer's administrator is asked
// to consent to with https://login.microsoftonline.com/{customer tenant}/adminconsent?client_id=
// {app id} ("Grant tenant-wide admin consent to an application"). Keep the lists equal to
// app/graph-permissions.bicep, the grant scripts and docs/permissions.md
// (tests/unit/test_infra_msp.py checks them against monitors/graph/permissions.py).
//
// The deployer needs the right to create applications (Application Developer, or users may
// register applications) and to add a federated credential to it (Application Administrator,
// Cloud Application Administrator, Application Developer or the app's owner). Microsoft Graph
// Bicep deployments are supported in the public cloud only.
//
// Like graph-permissions.bicep this module holds only Microsoft Graph resources: checkov
// 3.3.30 cannot parse the `extension` statement and has no checks for them, so `make checkov`
// leaves this file out by path and every Azure resource stays in files it reads.

extension microsoftGraphV1

@description('Alternate key of the application, unique in the tenant and immutable.')
param uniqueName string

@description('Name customers see in the consent prompt and under Enterprise applications.')
param displayName string

@description('Object (principal) id of the function app\'s user-assigned managed identity: the subject of the federated credential.')
param identityPrincipalId string

@description('Where Entra sends the administrator after consent: the function app\'s own site. /adminconsent needs a registered reply address.')
param redirectUri string

@description('Also request DeviceManagementManagedDevices.ReadWrite.All: the Intune report export (deployment report) has no read-only permission.')
param enableReportExport bool = true

@description('Also request the three remediation write permissions, for customers whose registry entry sets remediation to auto.')
param includeWritePermissions bool = false

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
// group-post-members.md (a device member needs both) and group-post-owners.md.
var writePermissions = [
  'GroupMember.ReadWrite.All' // POST /groups/{id}/members/$ref
  'Device.ReadWrite.All' // with GroupMember.ReadWrite.All when the member is a device
  'Group.ReadWrite.All' // POST /groups/{id}/owners/$ref (the provisioning client as ETG owner)
]
var permissions = concat(
  readPermissions,
  enableReportExport ? reportExportPermissions : [],
  includeWritePermissions ? writePermissions : []
)

resource graphServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// App role ids by permission name, read from the tenant's Microsoft Graph service principal
// (the ids are the same in every tenant).
var graphAppRoleIds = toObject(graphServicePrincipal.appRoles, role => role.value, role => role.id)

resource mspApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  description: 'etg-monitor: watches Windows Autopilot device preparation enrollments and their Enrollment Time Group. Reads only, unless remediation permissions were requested.'
  // Any organization's administrator can consent; no personal accounts.
  signInAudience: 'AzureADMultipleOrgs'
  web: {
    redirectUris: [
      redirectUri
    ]
    implicitGrantSettings: {
      enableAccessTokenIssuance: false
      enableIdTokenIssuance: false
    }
  }
  // App instance property lock ("How to configure app instance property lock for your
  // applications", serviceprincipallockconfiguration.md): nobody in a customer tenant can add
  // a secret or certificate to the app's service principal there and sign in as the monitor.
  servicePrincipalLockConfiguration: {
    isEnabled: true
    allProperties: true
  }
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [for permission in permissions: {
        id: graphAppRoleIds[permission]
        type: 'Role'
      }]
    }
  ]

  // Configure an application to trust a managed identity: issuer, subject, audience.
  resource managedIdentityCredential 'federatedIdentityCredentials@v1.0' = {
    name: '${mspApp.uniqueName}/function-app-identity'
    description: 'The etg-monitor function app\'s user-assigned managed identity signs in as this app.'
    issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    subject: identityPrincipalId
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

// The app's service principal in the home tenant, so the MSP's own tenant can be registered and
// consented like any customer's.
resource mspServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: mspApp.appId
}

output appId string = mspApp.appId
output objectId string = mspApp.id
output servicePrincipalId string = mspServicePrincipal.id
output requestedPermissions array = permissions
