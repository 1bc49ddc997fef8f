// Key Vault in RBAC mode for the monitor's secrets. App settings reference them with
// @Microsoft.KeyVault(SecretUri=...) (versionless: a new secret version is picked up without a
// redeploy); the function app's identity reads them as Key Vault Secrets User (rbac.bicep).
// A secret is written only when its value is given, so a deployment without one never
// overwrites a value set earlier.

param name string
param location string = resourceGroup().location
param tags object = {}

@secure()
param teamsWebhookUrl string = ''

@secure()
param notificationUrl string = ''

@secure()
param notificationClientState string = ''

var teamsWebhookSecretName = 'teams-webhook-url'
var notificationUrlSecretName = 'notification-url'
var notificationClientStateSecretName = 'notification-client-state'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // Purge protection stays off so that `azd down --purge` can remove the vault.
    publicNetworkAccess: 'Enabled'
  }
}

resource teamsWebhookSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(teamsWebhookUrl)) {
  parent: vault
  name: teamsWebhookSecretName
  properties: {
    value: teamsWebhookUrl
    contentType: 'Teams Workflows webhook URL'
  }
}

resource notificationUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(notificationUrl)) {
  parent: vault
  name: notificationUrlSecretName
  properties: {
    value: notificationUrl
    contentType: 'Graph change notification URL with function key'
  }
}

resource notificationClientStateSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(notificationClientState)) {
  parent: vault
  name: notificationClientStateSecretName
  properties: {
    value: notificationClientState
    contentType: 'Graph change notification clientState'
  }
}

output name string = vault.name
output teamsWebhookSecretUri string = '${vault.properties.vaultUri}secrets/${teamsWebhookSecretName}'
output notificationUrlSecretUri string = '${vault.properties.vaultUri}secrets/${notificationUrlSecretName}'
output notificationClientStateSecretUri string = '${vault.properties.vaultUri}secrets/${notificationClientStateSecretName}'
