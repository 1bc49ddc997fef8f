<#
.SYNOPSIS
    Grants the etg-monitor managed identity its Microsoft Graph application permissions.

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

    [switch] $IncludeReportExport,

    [ValidateSet('Global', 'USGov', 'USGovDoD', 'China')]
    [string] $Environment = 'Global'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$GraphAppId = '00000003-0000-0000-c000-000000000000'

# Least privilege, one line per permission; keep equal to infra/app/graph-permissions.bicep,
# infra/grant-graph-permissions.sh and docs/permissions.md.
$Permissions = [System.Collections.Generic.List[string]]@(
    'DeviceManagementConfiguration.Read.All'   # device preparation policies and their ETG
    'DeviceManagementManagedDevices.Read.All'  # managed devices: Entra device id, enrollment profile
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

$needed = @('AppRoleAssignment.ReadWrite.All', 'Application.Read.All')
$context = Get-MgContext
if (-not $context -or ($needed | Where-Object { $context.Scopes -notcontains $_ })) {
    Connect-MgGraph -Scopes $needed -Environment $Environment -NoWelcome
}

$spProperties = 'id', 'appId', 'displayName', 'servicePrincipalType'
if ($PSCmdlet.ParameterSetName -eq 'ByClientId') {
    $lookup = "appId $ClientId"
    $identity = @(Get-MgServicePrincipal -Filter "appId eq '$ClientId'" -Property $spProperties)
} else {
    $lookup = "object id $PrincipalId"
    $identity = @(Get-MgServicePrincipal -ServicePrincipalId $PrincipalId -Property $spProperties -ErrorAction SilentlyContinue)
}
if ($identity.Count -ne 1 -or -not $identity[0]) {
    throw "No service principal with $lookup in this tenant. Check the id and the tenant you signed in to."
}
$identity = $identity[0]
if ($identity.ServicePrincipalType -ne 'ManagedIdentity') {
    Write-Warning "$($identity.DisplayName) is a '$($identity.ServicePrincipalType)' service principal, not a managed identity."
}

$graph = Get-MgServicePrincipal -Filter "appId eq '$GraphAppId'" -Property 'id', 'appId', 'displayName', 'appRoles'
if (-not $graph) { throw 'Microsoft Graph service principal not found in this tenant.' }

$existing = @(Get-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $identity.Id -All |
    Where-Object { $_.ResourceId -eq $graph.Id })
$heldRoleIds = @($existing | ForEach-Object { $_.AppRoleId })

Write-Host "Managed identity: $($identity.DisplayName) (appId $($identity.AppId), object id $($identity.Id))"

$granted = 0; $already = 0; $failed = 0
foreach ($name in $Permissions) {
    $role = $graph.AppRoles | Where-Object { $_.Value -eq $name -and $_.AllowedMemberTypes -contains 'Application' }
    if (-not $role) {
        Write-Error "Graph has no application permission named $name" -ErrorAction Continue
        $failed++
        continue
    }
    if ($heldRoleIds -contains $role.Id) {
        Write-Host "  already granted  $name"
        $already++
        continue
    }
    if ($PSCmdlet.ShouldProcess($identity.DisplayName, "Grant Microsoft Graph application permission $name")) {
        try {
            New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $identity.Id `
                -PrincipalId $identity.Id -ResourceId $graph.Id -AppRoleId $role.Id | Out-Null
            Write-Host "  granted          $name"
            $granted++
        } catch {
            Write-Error "Could not grant ${name}: $($_.Exception.Message)" -ErrorAction Continue
            $failed++
        }
    } else {
        Write-Host "  would grant      $name"
    }
}

# Roles beyond the list are reported, never removed: someone may have granted them on purpose.
$wantedIds = @($graph.AppRoles | Where-Object { $Permissions -contains $_.Value } | ForEach-Object { $_.Id })
foreach ($assignment in $existing) {
    if ($wantedIds -notcontains $assignment.AppRoleId) {
        $extra = ($graph.AppRoles | Where-Object { $_.Id -eq $assignment.AppRoleId }).Value
        $hint = if ($extra -eq $ReportExport) { ' (needed for the deployment report: run with -IncludeReportExport)' } else { '' }
        Write-Host "  also holds       $extra$hint"
    }
}

Write-Host "Done: $granted granted, $already already granted, $failed failed."
if ($failed -gt 0) { exit 1 }
