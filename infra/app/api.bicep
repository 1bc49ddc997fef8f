// The Flex Consumption function app. A plain Microsoft.Web/sites resource (the shape of the
// quickstarts' core/host/functions-flexconsumption.bicep) so that keyVaultReferenceIdentity can
// point Key Vault references at the user-assigned identity.

param name string
@description('Primary location for all resources & Flex Consumption Function App')
param location string = resourceGroup().location
param tags object = {}
param applicationInsightsName string
param appServicePlanId string
param appSettings object = {}
param runtimeName string
param runtimeVersion string
param serviceName string = 'api'
param storageAccountName string
param deploymentStorageContainerName string
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100
param identityId string
param identityClientId string
@description('Resource id of the write identity (remediation), attached beside the read identity. Empty: none.')
param remediationIdentityId string = ''
@description('Application (client) id of the Entra app registration the console signs in with. Empty: App Service Authentication stays off and the console refuses every request.')
param consoleClientId string = ''
param enableBlob bool = true
param enableQueue bool = false
param enableTable bool = false

var applicationInsightsIdentity = 'ClientId=${identityClientId};Authorization=AAD'
var kind = 'functionapp,linux'

resource stg 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Host storage through the identity: no AzureWebJobsStorage connection string exists.
var baseAppSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId

  // Telemetry with Entra ID: the component has local (key) authentication disabled.
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: applicationInsightsIdentity
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
}

// Only the storage services the app uses get an endpoint (and, in rbac.bicep, a role).
var blobSettings = enableBlob ? { AzureWebJobsStorage__blobServiceUri: stg.properties.primaryEndpoints.blob } : {}
var queueSettings = enableQueue ? { AzureWebJobsStorage__queueServiceUri: stg.properties.primaryEndpoints.queue } : {}
var tableSettings = enableTable ? { AzureWebJobsStorage__tableServiceUri: stg.properties.primaryEndpoints.table } : {}

var allAppSettings = union(
  appSettings,
  blobSettings,
  queueSettings,
  tableSettings,
  baseAppSettings
)

// Spelled as variables: checkov 3.3.30's Bicep parser rejects a one-line object literal that
// opens a line of a multi-line function call (the union(...) that stood here), and a file it
// cannot parse is a file it does not check.
var readIdentity = {
  '${identityId}': {}
}
var writeIdentity = {
  '${remediationIdentityId}': {}
}
var userAssignedIdentities = empty(remediationIdentityId) ? readIdentity : union(readIdentity, writeIdentity)

resource api 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Microsoft Graph delivers change notifications to /api/graph/notifications from the internet, so public network access stays on; the routes are guarded by function keys and the console by App Service Authentication.
  // checkov:skip=CKV_AZURE_17: Graph change notifications and browsers signing in to the console present no client certificate; requiring one would refuse both.
  // checkov:skip=CKV_AZURE_213: /api/health reports the monitor (a job overdue or failing, a dependency down), which replacing an instance cannot fix, and it needs a function key the platform's probe does not send; so no platform health check path. Its 503 answers raise the alert rule in alerts.bicep instead.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales out on demand and to zero; every job is a timer the host reschedules, so always-ready instances would add cost without failover gain.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: kind
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: userAssignedIdentities
  }
  properties: {
    serverFarmId: appServicePlanId
    httpsOnly: true
    // @Microsoft.KeyVault(...) app settings resolve with this identity, not a system identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled' // deployments go to the blob container below, never FTP
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${stg.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: runtimeName
        version: runtimeVersion
      }
    }
  }
}

// A top-level child resource rather than a nested one so that the skips below stay with it.
resource configAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: this is the app settings resource, not the authentication settings; checkov reads every sites/config as if it were one. Authentication is authSettings below.
  // checkov:skip=CKV_AZURE_222: the app settings carry no network setting; public access is decided (and explained) on the site.
  // checkov:skip=CKV_AZURE_63: checkov reads the app settings as web config; App Service HTTP logs do not apply to a Flex Consumption function app, whose requests and traces go to Application Insights.
  // checkov:skip=CKV_AZURE_65: as CKV_AZURE_63: detailed error pages are a web app file-system log; failures are in Application Insights.
  // checkov:skip=CKV_AZURE_66: as CKV_AZURE_63: failed request tracing is a web app file-system log; failed requests are in Application Insights requests.
  // checkov:skip=CKV_AZURE_80: a .NET Framework version setting; this is a Python 3.11 app.
  // checkov:skip=CKV_AZURE_88: Flex Consumption has no Azure Files content share; the package is in a blob container reached with the managed identity.
  parent: api
  name: 'appsettings'
  properties: union(allAppSettings, {
    // The console's links in alert cards: the site's own address.
    ETG_PUBLIC_BASE_URL: 'https://${api.properties.defaultHostName}'
  })
}

// App Service Authentication (Easy Auth) with Entra ID, for the operator console. It covers the
// whole site, so unauthenticated requests are let through (AllowAnonymous) rather than sent to
// sign-in: Graph's change notifications and the function-key routes carry no user. The console
// itself refuses a request without the X-MS-CLIENT-PRINCIPAL headers the platform sets, and
// checks the operators group in them. The platform removes those headers from incoming requests,
// so a client cannot forge them (configure-authentication-user-identities.md).
// Excluding every non-console path instead (globalValidation.excludedPaths with Return401)
// would lock out any route added later until someone lists it.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: authentication is on when consoleClientId is given (platform.enabled, the authsettingsV2 shape); checkov 3.3.30 reads only the legacy authsettings' properties.enabled.
  // checkov:skip=CKV_AZURE_222: authentication settings carry no network setting; public access is decided on the site.
  // checkov:skip=CKV_AZURE_63: checkov reads every sites/config as web config; see the same skip on the app settings.
  // checkov:skip=CKV_AZURE_65: as CKV_AZURE_63.
  // checkov:skip=CKV_AZURE_66: as CKV_AZURE_63.
  // checkov:skip=CKV_AZURE_80: a .NET Framework version setting; this is a Python 3.11 app.
  // checkov:skip=CKV_AZURE_88: Flex Consumption has no Azure Files content share.
  parent: api
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: !empty(consoleClientId)
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    login: {
      tokenStore: {
        enabled: false // the console needs only the principal headers, no stored tokens
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: !empty(consoleClientId)
        registration: {
          clientId: consoleClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${consoleClientId}'
          ]
        }
      }
    }
  }
}

output SERVICE_API_NAME string = api.name
output SERVICE_API_URI string = 'https://${api.properties.defaultHostName}'
