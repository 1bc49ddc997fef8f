targetScope = 'subscription'

// etg-monitor on Azure Functions Flex Consumption, laid out like the Azure-Samples
// functions-quickstart-python-azd templates: one resource group, a user-assigned managed identity
// for everything (storage, Application Insights, Key Vault, Microsoft Graph reads), no keys or
// connection strings anywhere; with enableRemediation a second one holds the Graph write
// permissions and nothing else. With mspMode one deployment watches many customer tenants
// through a multi-tenant app registration whose credential is that identity (docs/msp.md).
// See infra/README.md.

@minLength(1)
@maxLength(64)
@description('Name of the environment, used to generate a short unique hash used in all resources.')
param environmentName string

@minLength(1)
@description('Primary location for all resources and the Flex Consumption function app.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

param apiServiceName string = ''
param apiUserAssignedIdentityName string = ''
param remediationUserAssignedIdentityName string = ''
param applicationInsightsName string = ''
param appServicePlanName string = ''
param keyVaultName string = ''
param logAnalyticsName string = ''
param resourceGroupName string = ''
param storageAccountName string = ''

@description('Object id of the person (or pipeline) deploying. Gets table access for the etg-monitor CLI and secret access in Key Vault. Leave empty to grant nothing.')
param principalId string = ''

@description('Microsoft Graph service root for the tenant\'s cloud.')
@allowed([
  'https://graph.microsoft.com'
  'https://graph.microsoft.us'
  'https://dod-graph.microsoft.us'
  'https://microsoftgraph.chinacloudapi.cn'
])
param graphEndpoint string = 'https://graph.microsoft.com'

@minLength(1)
@maxLength(40)
@description('Prefix of every table the monitor creates (letters and digits, starting with a letter).')
param tablePrefix string = 'etg'

@description('Also export the per-app and per-script device preparation reports (payload_incomplete). Needs the report export permission.')
param detailedReports bool = false

@description('Optional JSON object from device preparation policy id or name to its ETG group id, for tenants that route neither ETG retrieve action. It always wins over what Graph says.')
param policyGroups string = ''

@description('With grantGraphPermissions: also grant DeviceManagementManagedDevices.ReadWrite.All, the only permission that opens the Intune report export the deployment report comes from. With mspMode: also ask customers for it.')
param enableReportExport bool = true

@description('Grant the Graph application permissions from this template (Microsoft Graph Bicep extension). The deployer must hold Privileged Role Administrator (or AppRoleAssignment.ReadWrite.All and Application.Read.All). Default: grant them with infra/grant-graph-permissions.ps1 or .sh instead.')
param grantGraphPermissions bool = false

@description('Let the monitor heal what it finds. Creates a second user-assigned identity (the write identity), attaches it to the function app and names it in ETG_REMEDIATION_CLIENT_ID; the read identity stays read-only. Grant the write identity its Graph permissions with infra/grant-graph-permissions.ps1 -WritePrincipalId or .sh --write-principal-id (docs/permissions.md). Default: no write identity, remediation off.')
param enableRemediation bool = false

@description('ETG_REMEDIATION when enableRemediation is true: dry-run plans and reports the additions and writes nothing; auto makes them (never a removal); off keeps the identity but writes nothing. Always off without the write identity.')
@allowed([
  'off'
  'dry-run'
  'auto'
])
param remediationMode string = enableRemediation ? 'dry-run' : 'off'

@minValue(1)
@maxValue(500)
@description('ETG_REMEDIATION_MAX_PER_RUN: most additions one run makes; the rest wait for the next run.')
param remediationMaxPerRun int = 20

@secure()
@description('Teams Workflows webhook URL ("When a Teams webhook request is received"). Stored in Key Vault. Empty: alerts are not sent.')
param teamsWebhookUrl string = ''

@secure()
@description('https://<app host>/api/graph/notifications?code=<function key>. Stored in Key Vault. Empty: no change-notification subscriptions are made.')
param notificationUrl string = ''

@secure()
@description('Shared secret Graph echoes in every change notification (16 to 128 characters). azd generates it once and keeps it in the environment\'s config.json; outside azd, pass e.g. `openssl rand -hex 32`, and the same value on every deployment.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      noSpecial: true
    }
  }
})
param notificationClientState string

@description('ETG_ALERT_ROUTES: which channels each alert goes to, `name=channel,channel;...` (docs/alerting.md). Empty: every alert to Teams only.')
param alertRoutes string = ''

@secure()
@description('Integration key of a PagerDuty service\'s Events API v2 integration. Stored in Key Vault. Empty: no PagerDuty channel.')
param pagerDutyRoutingKey string = ''

@description('ETG_ALERT_WEBHOOK_URL: https receiver of the generic JSON webhook. Needs alertWebhookSecret. Empty: no webhook channel.')
param alertWebhookUrl string = ''

@secure()
@description('Key of the generic webhook\'s HMAC-SHA256 signature (32 to 256 characters), shared with the receiver. Stored in Key Vault.')
param alertWebhookSecret string = ''

@description('Application (client) id of the Entra app registration operators sign in to the console with (App Service Authentication). Empty: no sign-in, and the console refuses every request.')
param consoleClientId string = ''

@description('ETG_CONSOLE_OPERATORS_GROUP: object id of the Entra group whose members may use the console. Empty: nobody signed in is let in.')
param consoleOperatorsGroupId string = ''

@secure()
@description('Key of the console\'s CSRF tokens (ETG_CONSOLE_SECRET). azd generates it once and keeps it in the environment\'s config.json; outside azd, pass e.g. `openssl rand -hex 32`, the same value every time.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      noSpecial: true
    }
  }
})
param consoleSecret string

@description('Email address told when the monitor itself fails (a job failing, health answering 503). Empty: the action group has no receiver and the alert rules only show in Azure Monitor.')
param alertEmail string = ''

@description('Resource id of an existing action group the monitor\'s own alert rules notify instead of the one this template creates. Empty: use the template\'s.')
param actionGroupId string = ''

@description('Managed service provider mode (docs/msp.md): create the multi-tenant app registration that is the monitor\'s identity in every customer tenant of the registry, with a federated credential trusting the function app\'s identity (no secret), and name it in ETG_MSP_APP_CLIENT_ID. The deployer needs the right to create applications. Microsoft Graph Bicep runs in the public cloud only. Default: single tenant, no app registration.')
param mspMode bool = false

@minLength(1)
@maxLength(120)
@description('With mspMode: the app registration\'s name, which customers\' administrators see in the consent prompt and under Enterprise applications.')
param mspAppDisplayName string = 'etg-monitor'

@description('With mspMode: also request GroupMember.ReadWrite.All, Device.ReadWrite.All and Group.ReadWrite.All in every customer\'s consent, for tenants whose registry entry sets remediation to auto. Default: the app reads only.')
param mspWritePermissions bool = false

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = !empty(apiServiceName) ? apiServiceName : '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var effectiveStorageAccountName = !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
var tableServiceUrl = 'https://${effectiveStorageAccountName}.table.${environment().suffixes.storage}'
var queueServiceUrl = 'https://${effectiveStorageAccountName}.queue.${environment().suffixes.storage}'
// The queue the timers fan registry tenants' jobs out on: ETG_JOB_QUEUE's value below, the
// code's default (tests/unit/test_infra_msp.py holds the three equal).
var jobQueueName = 'etg-jobs'

// Organize resources in a resource group
resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The one identity the function app uses: storage, Application Insights, Key Vault references
// and Microsoft Graph (DefaultAzureCredential picks it through AZURE_CLIENT_ID).
module apiUserAssignedIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'apiUserAssignedIdentity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: !empty(apiUserAssignedIdentityName) ? apiUserAssignedIdentityName : '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
  }
}

// The write identity, only with enableRemediation: it holds the Graph write permissions
// (granted separately) and nothing else, no Azure role, so the read identity stays read-only.
module remediationUserAssignedIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = if (enableRemediation) {
  name: 'remediationUserAssignedIdentity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: !empty(remediationUserAssignedIdentityName) ? remediationUserAssignedIdentityName : '${abbrs.managedIdentityUserAssignedIdentities}remediation-${resourceToken}'
  }
}
// ARM evaluates only the branch of if() that the condition picks: no output of a module that
// was not deployed is read.
var remediationIdentityClientId = enableRemediation ? remediationUserAssignedIdentity!.outputs.clientId : ''
var remediationIdentityPrincipalId = enableRemediation ? remediationUserAssignedIdentity!.outputs.principalId : ''
var remediationIdentityId = enableRemediation ? remediationUserAssignedIdentity!.outputs.resourceId : ''

// Flex Consumption plan
module appServicePlan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'appserviceplan'
  scope: rg
  params: {
    name: !empty(appServicePlanName) ? appServicePlanName : '${abbrs.webServerFarms}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    location: location
    tags: tags
  }
}

// Every setting monitors/settings.py reads, under the same name.
// tests/unit/test_infra_settings.py fails when this list and the code disagree.
var appSettings = {
  // NCRONTAB schedules (UTC), resolved by the Functions host (%NAME% in function_app.py).
  CONFIG_CHECK_SCHEDULE: '0 0 * * * *'
  SCAN_SCHEDULE: '0 */10 * * * *'
  ALERTS_SCHEDULE: '0 */5 * * * *'
  SUMMARY_SCHEDULE: '0 0 7 * * 1'
  SUBSCRIPTIONS_SCHEDULE: '0 15 * * * *'
  NOTIFICATIONS_SCHEDULE: '0 * * * * *'

  // Microsoft Graph, as the user-assigned identity.
  ETG_GRAPH_ENDPOINT: graphEndpoint
  ETG_GRAPH_CREDENTIAL: 'default'
  AZURE_CLIENT_ID: apiUserAssignedIdentity.outputs.clientId
  ETG_GRAPH_CONCURRENCY: '8'
  ETG_GRAPH_MAX_RETRIES: '8'
  ETG_GRAPH_TIMEOUT_SECONDS: '30'
  ETG_EXPORT_TIMEOUT_SECONDS: '300'
  ETG_GRAPH_RETRY_BUDGET_SECONDS: '120'

  // State: identity-based Table Storage; no connection string.
  ETG_STORAGE_TABLE_URL: tableServiceUrl
  ETG_STORAGE_CONNECTION: ''
  ETG_TABLE_PREFIX: tablePrefix

  // Scan
  ETG_SCAN_LOOKBACK_HOURS: '168'
  ETG_AUDIT_LATENCY_MINUTES: '60'
  ETG_MEMBERSHIP_GRACE_MINUTES: '10'
  ETG_EARLY_CONCLUSION: 'true'
  ETG_STUCK_GRACE_MINUTES: '30'
  ETG_DETAILED_REPORTS: detailedReports ? 'true' : 'false'
  ETG_POLICY_GROUPS: policyGroups

  // Teams alerts. The webhook URL carries a sig= secret: Key Vault reference only.
  ETG_TEAMS_WEBHOOK_URL: !empty(teamsWebhookUrl) ? '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.teamsWebhookSecretUri})' : ''
  ETG_ALERT_DIGEST_THRESHOLD: '5'
  ETG_ALERT_MAX_AGE_HOURS: '24'
  ETG_REMIND_AFTER_HOURS: '24'

  // More channels (docs/alerting.md). The routing key and the signing key: Key Vault only.
  ETG_ALERT_ROUTES: alertRoutes
  ETG_PAGERDUTY_ROUTING_KEY: !empty(pagerDutyRoutingKey) ? '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.pagerDutyRoutingKeySecretUri})' : ''
  ETG_PAGERDUTY_EVENTS_URL: 'https://events.pagerduty.com/v2/enqueue'
  ETG_ALERT_WEBHOOK_URL: alertWebhookUrl
  ETG_ALERT_WEBHOOK_SECRET: !empty(alertWebhookSecret) ? '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.alertWebhookSecretUri})' : ''

  // Graph change notifications. The URL carries a function key: Key Vault reference only.
  ETG_NOTIFICATION_URL: !empty(notificationUrl) ? '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.notificationUrlSecretUri})' : ''
  ETG_CLIENT_STATE: !empty(notificationClientState) ? '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.notificationClientStateSecretUri})' : ''
  ETG_TENANT_ID: tenant().tenantId // notifications from any other tenant are refused

  // Operator console, behind App Service Authentication (app/api.bicep). ETG_PUBLIC_BASE_URL is
  // set in app/api.bicep, which knows the site's host name.
  ETG_CONSOLE_OPERATORS_GROUP: consoleOperatorsGroupId
  ETG_CONSOLE_DEV_PRINCIPAL: '' // local use only: the app refuses it outside a loopback tenant
  ETG_CONSOLE_SECRET: !empty(consoleSecret) ? '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.consoleSecretUri})' : ''

  // Many tenants (docs/msp.md): used only while the tenant registry has entries. The queue
  // (app/queues.bicep creates it and its -poison queue, as jobQueueName) is reached with the
  // identity, as the tables are; the app registration and the identity that signs it in are
  // named only with mspMode.
  ETG_JOB_QUEUE: 'etg-jobs'
  ETG_STORAGE_QUEUE_URL: queueServiceUrl
  ETG_KEY_VAULT_URL: keyVault.outputs.uri // the registry tenants' kv:<secret name> references
  ETG_MSP_APP_CLIENT_ID: mspAppClientId
  ETG_MSP_IDENTITY_CLIENT_ID: mspMode ? apiUserAssignedIdentity.outputs.clientId : ''

  // Remediation: writes only through the write identity, and never without it.
  ETG_REMEDIATION: enableRemediation ? remediationMode : 'off'
  ETG_REMEDIATION_MAX_PER_RUN: string(remediationMaxPerRun)
  ETG_REMEDIATION_CLIENT_ID: remediationIdentityClientId

  // structlog JSON lines: one object per line in Application Insights traces.
  ETG_LOG_FORMAT: 'json'
}

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.name
    appServicePlanId: appServicePlan.outputs.resourceId
    runtimeName: 'python'
    runtimeVersion: '3.11'
    storageAccountName: storage.outputs.name
    enableBlob: storageEndpointConfig.enableBlob
    enableQueue: storageEndpointConfig.enableQueue
    enableTable: storageEndpointConfig.enableTable
    deploymentStorageContainerName: deploymentStorageContainerName
    identityId: apiUserAssignedIdentity.outputs.resourceId
    identityClientId: apiUserAssignedIdentity.outputs.clientId
    remediationIdentityId: remediationIdentityId
    consoleClientId: consoleClientId
    appSettings: appSettings
  }
  // Key Vault references resolve when the app starts: the identity's roles must exist first,
  // and the queue trigger starts listening then.
  dependsOn: [
    rbac
    jobQueues
  ]
}

// Storage: the deployment package, the Functions host (timer locks) and the monitor's tables.
module storage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage'
  scope: rg
  params: {
    name: effectiveStorageAccountName
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only: no account keys, no SAS
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [{name: deploymentStorageContainerName}]
    }
    minimumTlsVersion: 'TLS1_2'
    location: location
    tags: tags
  }
}

// Which storage services the app reaches, and so which data roles the identity gets.
var storageEndpointConfig = {
  enableBlob: true // deployment package, host storage, timer trigger locks
  enableQueue: true // the job queue: the timers send, the queue trigger processes (app/queues.bicep)
  enableTable: true // the monitor's state (anomalies, runs, deployments, ...)
  allowUserIdentityPrincipal: true // the deployer may run the etg-monitor CLI against the same tables
}

// The job queue and its poison queue, in the same account.
module jobQueues './app/queues.bicep' = {
  name: 'jobQueues'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    jobQueueName: jobQueueName
  }
}

// Key Vault (RBAC mode) for the deployment's secrets and the registry tenants' alert secrets.
module keyVault './app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    teamsWebhookUrl: teamsWebhookUrl
    notificationUrl: notificationUrl
    notificationClientState: notificationClientState
    consoleSecret: consoleSecret
    pagerDutyRoutingKey: pagerDutyRoutingKey
    alertWebhookSecret: alertWebhookSecret
  }
}

// Consolidated role assignments
module rbac './app/rbac.bicep' = {
  name: 'rbacAssignments'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.name
    keyVaultName: keyVault.outputs.name
    managedIdentityPrincipalId: apiUserAssignedIdentity.outputs.principalId
    userIdentityPrincipalId: principalId
    enableBlob: storageEndpointConfig.enableBlob
    enableQueue: storageEndpointConfig.enableQueue
    enableTable: storageEndpointConfig.enableTable
    allowUserIdentityPrincipal: storageEndpointConfig.allowUserIdentityPrincipal
  }
}

// Microsoft Graph application permissions for the identity (optional; see parameter).
module graphPermissions './app/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graphPermissions'
  scope: rg
  params: {
    principalId: apiUserAssignedIdentity.outputs.principalId
    enableReportExport: enableReportExport
    writePrincipalId: remediationIdentityPrincipalId
  }
}

// The multi-tenant app registration and its federated credential (mspMode only; docs/msp.md).
// Its reply address is the function app's default host name, known before the site exists, so
// that the app registration need not wait for the site whose settings name it.
module mspApp './app/msp-app.bicep' = if (mspMode) {
  name: 'mspApp'
  scope: rg
  params: {
    uniqueName: 'etg-monitor-msp-${resourceToken}'
    displayName: mspAppDisplayName
    identityPrincipalId: apiUserAssignedIdentity.outputs.principalId
    redirectUri: 'https://${functionAppName}.azurewebsites.net/'
    enableReportExport: enableReportExport
    includeWritePermissions: mspWritePermissions
  }
}
var mspAppClientId = mspMode ? mspApp!.outputs.appId : ''

// Monitor application with Azure Monitor - Log Analytics and Application Insights
module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: '${uniqueString(deployment().name, location)}-loganalytics'
  scope: rg
  params: {
    name: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module monitoring 'br/public:avm/res/insights/component:0.6.0' = {
  name: '${uniqueString(deployment().name, location)}-appinsights'
  scope: rg
  params: {
    name: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true // telemetry only with Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)
  }
}

// The monitor's own view in Azure Monitor: a workbook over its log records, and alert rules
// for the monitor itself (a job failing, health answering 503).
module workbook './app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.name
    environmentName: environmentName
  }
}

module monitorAlerts './app/alerts.bicep' = {
  name: 'monitorAlerts'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.name
    namePrefix: functionAppName
    alertEmail: alertEmail
    actionGroupId: actionGroupId
  }
}

// Outputs land in the azd environment (azd env get-values).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.SERVICE_API_NAME
output AZURE_FUNCTION_NAME string = api.outputs.SERVICE_API_NAME
output SERVICE_API_URI string = api.outputs.SERVICE_API_URI
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = apiUserAssignedIdentity.outputs.clientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = apiUserAssignedIdentity.outputs.principalId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.name
output GRAPH_PERMISSIONS_GRANTED_BY_TEMPLATE bool = grantGraphPermissions
// The write identity (empty without enableRemediation): grant it with the scripts' write option.
output AZURE_REMEDIATION_IDENTITY_CLIENT_ID string = remediationIdentityClientId
output AZURE_REMEDIATION_IDENTITY_PRINCIPAL_ID string = remediationIdentityPrincipalId
// For running the etg-monitor CLI locally against the same tables.
output ETG_STORAGE_TABLE_URL string = tableServiceUrl
output ETG_TABLE_PREFIX string = tablePrefix
// The console (empty consoleClientId: no sign-in, the console refuses every request).
output CONSOLE_URL string = '${api.outputs.SERVICE_API_URI}/api/console/anomalies'
output CONSOLE_SIGN_IN_REDIRECT_URI string = '${api.outputs.SERVICE_API_URI}/.auth/login/aad/callback'
output AZURE_WORKBOOK_ID string = workbook.outputs.id
// Many tenants (docs/msp.md). For `etg-monitor tenants ...` run locally against the same
// registry; the consent URL needs the customer's tenant id in place of the braces.
output ETG_JOB_QUEUE string = jobQueues.outputs.jobQueueName
output ETG_STORAGE_QUEUE_URL string = queueServiceUrl
output ETG_KEY_VAULT_URL string = keyVault.outputs.uri
output ETG_MSP_APP_CLIENT_ID string = mspAppClientId
output MSP_ADMIN_CONSENT_URL string = mspMode ? '${environment().authentication.loginEndpoint}{customer-tenant-id}/adminconsent?client_id=${mspAppClientId}' : ''
