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

resource api 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: kind
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: union(
      { '${identityId}': {} },
      empty(remediationIdentityId) ? {} : { '${remediationIdentityId}': {} }
    )
  }
  properties: {
    serverFarmId: appServicePlanId
    httpsOnly: true
    // @Microsoft.KeyVault(...) app settings resolve with this identity, not a system identity.
    keyVaultReferenceIdentity: identityId
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

  resource configAppSettings 'config' = {
    name: 'appsettings'
    properties: allAppSettings
  }
}

output SERVICE_API_NAME string = api.name
output SERVICE_API_URI string = 'https://${api.properties.defaultHostName}'
