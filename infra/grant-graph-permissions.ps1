<#
.SYNOPSIS
    Grants the etg-monitor managed identity (and, for remediation, the write identity) its
    Microsoft Graph application permissions.

.DESCRIPTION
    Looks up the managed identity's service principal and Microsoft Graph's service principal,
    then assigns only the Graph app roles the identity does not hold yet. Safe to run again:
    it prints what it granted and what was already there, and never removes anything (Graph
    roles the identity holds beyond this list are listed so you can review them).

    Assigning an application permission to a managed identity is the admin consent: there is no
    separate consent step. Run it as Privileged Role Administrator or Global Administrator; the
    script signs in (Connect-MgGraph) asking for AppRoleAssignment.ReadWrite.All and
    Application.Read.All.

    New permissions reach the app with its next Graph token; managed identity tokens are cached,
    so allow up to 24 hours before a permission-related "unverified" clears.

.PARAMETER ClientId
    Client id (appId) of the user-assigned managed identity
    (azd env get-value AZURE_FUNCTION_IDENTITY_CLIENT_ID).

.PARAMETER PrincipalId
    Object id of the identity's service principal
    (azd env get-value AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID). Use instead of -ClientId.

.PARAMETER WritePrincipalId
    Object id of the remediation write identity's service principal
    (azd env get-value AZURE_REMEDIATION_IDENTITY_PRINCIPAL_ID, set when enableRemediation is
    true). It gets only GroupMember.ReadWrite.All and Device.ReadWrite.All (add a device to an
    ETG, group-post-members.md) and Group.ReadWrite.All (add the provisioning client as ETG
    owner, group-post-owners.md). Can be given alone, or with -ClientId or -PrincipalId.

.PARAMETER IncludeReportExport
    Also grant DeviceManagementManagedDevices.ReadWrite.All. The Intune report export, the only
    source of the device preparation deployment report, has no read-only permission: without it
    the scan reports every deployment as unverified.

.PARAMETER Environment
    Microsoft Graph cloud for Connect-MgGraph (Global, USGov, USGovDoD, China).

.EXAMPLE
    ./infra/grant-graph-permissions.ps1 -ClientId (azd env get-value AZURE_FUNCTION_IDENTITY_CLIENT_ID) -IncludeReportExport -WhatIf

.EXAMPLE
    ./infra/grant-graph-permissions.ps1 -PrincipalId 00000000-0000-0000-0000-000000000000 -IncludeReportExport

.EXAMPLE
    ./infra/grant-graph-permissions.ps1 -WritePrincipalId (azd env get-value AZURE_REMEDIATION_IDENTITY_PRINCIPAL_ID) -WhatIf
#>
#Requires -Modules Microsoft.Graph.Authentication, Microsoft.Graph.Applications
[CmdletBinding(SupportsShouldProcess, DefaultParameterSetName = 'ByClientId')]
param(
    [Parameter(Mandatory, ParameterSetName = 'ByClientId')]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $ClientId,

    [Parameter(Mandatory, ParameterSetName = 'ByPrincipalId')]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $PrincipalId,

    [Parameter(ParameterSetName = 'ByClientId')]
    [Parameter(ParameterSetName = 'ByPrincipalId')]
    [Parameter(Mandatory, ParameterSetName = 'WriteOnly')]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $WritePrincipalId,

    [Parameter(ParameterSetName = 'ByClientId')]
    [Parameter(ParameterSetName = 'ByPrincipalId')]
    [switch] $IncludeReportExport,

    [ValidateSet('Global', 'USGov', 'USGovDoD', 'China')]
    [string] $Environment = 'Global'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$GraphAppId = '00000003-0000-0000-c000-000000000000'

if ($WritePrincipalId -and $WritePrincipalId -eq $PrincipalId) {
    # The read identity stays read-only: writes need an identity of their own.
    throw '-WritePrincipalId must be the write identity, not the read identity.'
}

# Least privilege, one line per permission; keep equal to infra/app/graph-permissions.bicep,
# infra/grant-graph-permissions.sh and docs/permissions.md.
$Permissions = [System.Collections.Generic.List[string]]@(
    'DeviceManagementConfiguration.Read.All'   # device preparation policies and their ETG
    'DeviceManagementManagedDevices.Read.All'  # managed devices: Entra device id, enrollment profile
    'DeviceManagementApps.Read.All'            # the apps a policy selects, and their assignments
    'GroupMember.Read.All'                     # ETG properties, owners, membership
    'Device.Read.All'                          # Entra device object ids
    'AuditLog.Read.All'                        # Add/Remove member to group events
    'Directory.Read.All'                       # documented alongside AuditLog.Read.All for directory audits
    'Application.Read.All'                     # the Intune Provisioning Client service principal
    'Group.Read.All'                           # change-notification subscriptions on the ETGs
    'User.Read.All'                            # the enrolling user's groups: which policy applied
)
$ReportExport = 'DeviceManagementManagedDevices.ReadWrite.All'
if ($IncludeReportExport) { $Permissions.Add($ReportExport) }

# The write identity (remediation) only. group-post-members.md: adding a device member needs
# GroupMember.ReadWrite.All and Device.ReadWrite.All; group-post-owners.md: adding an owner
# needs Group.ReadWrite.All. Keep equal to infra/app/graph-permissions.bicep (writePermissions).
$WritePermissions = @(
    'GroupMember.ReadWrite.All'  # POST /groups/{id}/members/$ref
    'Device.ReadWrite.All'       # with GroupMember.ReadWrite.All when the member is a device
    'Group.ReadWrite.All'        # POST /groups/{id}/owners/$ref: the provisioning client as ETG owner
)

$needed = @('AppRoleAssignment.ReadWrite.All', 'Application.Read.All')
$context = Get-MgContext
if (-not $context -or ($needed | Where-Object { $context.Scopes -notcontains $_ })) {
    Connect-MgGraph -Scopes $needed -Environment $Environment -NoWelcome
}

$graph = Get-MgServicePrincipal -Filter "appId eq '$GraphAppId'" -Property 'id', 'appId', 'displayName', 'appRoles'
if (-not $graph) { throw 'Microsoft Graph service principal not found in this tenant.' }

$script:granted = 0; $script:already = 0; $script:failed = 0

function Find-Identity([string] $ByClientId, [string] $ByPrincipalId) {
    $spProperties = 'id', 'appId', 'displayName', 'servicePrincipalType'
    if ($ByClientId) {
        $lookup = "appId $ByClientId"
        $found = @(Get-MgServicePrincipal -Filter "appId eq '$ByClientId'" -Property $spProperties)
    } else {
        $lookup = "object id $ByPrincipalId"
        $found = @(Get-MgServicePrincipal -ServicePrincipalId $ByPrincipalId -Property $spProperties -ErrorAction SilentlyContinue)
    }
    if ($found.Count -ne 1 -or -not $found[0]) {
        throw "No service principal with $lookup in this tenant. Check the id and the tenant you signed in to."
    }
    if ($found[0].ServicePrincipalType -ne 'ManagedIdentity') {
        Write-Warning "$($found[0].DisplayName) is a '$($found[0].ServicePrincipalType)' service principal, not a managed identity."
    }
    return $found[0]
}

function Grant-Permissions([string] $Label, $Identity, [string[]] $Wanted, [string] $ExtraHint) {
    $existing = @(Get-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $Identity.Id -All |
        Where-Object { $_.ResourceId -eq $graph.Id })
    $heldRoleIds = @($existing | ForEach-Object { $_.AppRoleId })

    Write-Host "${Label}: $($Identity.DisplayName) (appId $($Identity.AppId), object id $($Identity.Id))"
    foreach ($name in $Wanted) {
        $role = $graph.AppRoles | Where-Object { $_.Value -eq $name -and $_.AllowedMemberTypes -contains 'Application' }
        if (-not $role) {
            Write-Error "Graph has no application permission named $name" -ErrorAction Continue
            $script:failed++
            continue
        }
        if ($heldRoleIds -contains $role.Id) {
            Write-Host "  already granted  $name"
            $script:already++
            continue
        }
        if ($PSCmdlet.ShouldProcess($Identity.DisplayName, "Grant Microsoft Graph application permission $name")) {
            try {
                New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $Identity.Id `
                    -PrincipalId $Identity.Id -ResourceId $graph.Id -AppRoleId $role.Id | Out-Null
                Write-Host "  granted          $name"
                $script:granted++
            } catch {
                Write-Error "Could not grant ${name}: $($_.Exception.Message)" -ErrorAction Continue
                $script:failed++
            }
        } else {
            Write-Host "  would grant      $name"
        }
    }

    # Roles beyond the list are reported, never removed: someone may have granted them on purpose.
    $wantedIds = @($graph.AppRoles | Where-Object { $Wanted -contains $_.Value } | ForEach-Object { $_.Id })
    foreach ($assignment in $existing) {
        if ($wantedIds -notcontains $assignment.AppRoleId) {
            $extra = ($graph.AppRoles | Where-Object { $_.Id -eq $assignment.AppRoleId }).Value
            $hint = if ($ExtraHint -and $extra -eq $ReportExport) { $ExtraHint } else { '' }
            Write-Host "  also holds       $extra$hint"
        }
    }
}

if ($PSCmdlet.ParameterSetName -ne 'WriteOnly') {
    $identity = Find-Identity -ByClientId $ClientId -ByPrincipalId $PrincipalId
    if ($WritePrincipalId -and $identity.Id -eq $WritePrincipalId) {
        throw '-WritePrincipalId must be the write identity, not the read identity.'
    }
    Grant-Permissions 'Managed identity' $identity $Permissions.ToArray() ' (needed for the deployment report: run with -IncludeReportExport)'
}
if ($WritePrincipalId) {
    $writeIdentity = Find-Identity -ByPrincipalId $WritePrincipalId
    Grant-Permissions 'Write identity (remediation)' $writeIdentity $WritePermissions ''
}

Write-Host "Done: $($script:granted) granted, $($script:already) already granted, $($script:failed) failed."
if ($script:failed -gt 0) { exit 1 }
