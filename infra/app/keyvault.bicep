// Key Vault in RBAC mode for the monitor's secrets. App settings reference them with
// @Microsoft.KeyVault(SecretUri=...) (versionless: a new secret version is picked up without a
// redeploy); the function app's identity reads them as Key Vault Secrets User (rbac.bicep).
// A secret is written only when its value is given, so a deployment without one never
// overwrites a value set earlier.
// With a tenant registry (docs/msp.md) each customer's alert secrets live here too, set by the
// operator (`az keyvault secret set`), never by this template, and the app reads them by name
// with the same role when that tenant's job runs.

param name string
param location string = resourceGroup().location
param tags object = {}

@secure()
param teamsWebhookUrl string = ''

@secure()
param notificationUrl string = ''

@secure()
param notificationClientState string = ''

@secure()
param consoleSecret string = ''

@secure()
param pagerDutyRoutingKey string = ''

@secure()
param alertWebhookSecret string = ''

var teamsWebhookSecretName = 'teams-webhook-url'
var notificationUrlSecretName = 'notification-url'
var notificationClientStateSecretName = 'notification-client-state'
var consoleSecretName = 'console-secret'
var pagerDutyRoutingKeySecretName = 'pagerduty-routing-key'
var alertWebhookSecretName = 'alert-webhook-secret'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_109: the Flex Consumption app has no virtual network integration here, so it resolves its Key Vault references over the public endpoint; a firewall with default Deny would refuse the app itself. Access is Entra ID and RBAC only.
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109: public network access stays on until the template gains virtual network integration and a private endpoint.
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // A deleted vault (and its secrets) cannot be purged before the retention ends: the
    // webhook URL and client state survive an accidental `azd down`. Once on, it stays on.
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

resource teamsWebhookSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(teamsWebhookUrl)) {
  // checkov:skip=CKV_AZURE_41: the value has no natural expiry, and a secret that expires stops the app from resolving it without a warning; rotation is documented in docs/deploy.md.
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 does not look inside the body of a conditional (if) resource.
  parent: vault
  name: teamsWebhookSecretName
  properties: {
    value: teamsWebhookUrl
    contentType: 'Teams Workflows webhook URL'
  }
}

resource notificationUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(notificationUrl)) {
  // checkov:skip=CKV_AZURE_41: the value has no natural expiry, and a secret that expires stops the app from resolving it without a warning; rotation is documented in docs/deploy.md.
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 does not look inside the body of a conditional (if) resource.
  parent: vault
  name: notificationUrlSecretName
  properties: {
    value: notificationUrl
    contentType: 'Graph change notification URL with function key'
  }
}

resource notificationClientStateSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(notificationClientState)) {
  // checkov:skip=CKV_AZURE_41: the value has no natural expiry, and a secret that expires stops the app from resolving it without a warning; rotation is documented in docs/deploy.md.
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 does not look inside the body of a conditional (if) resource.
  parent: vault
  name: notificationClientStateSecretName
  properties: {
    value: notificationClientState
    contentType: 'Graph change notification clientState'
  }
}

resource consoleSecretResource 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(consoleSecret)) {
  // checkov:skip=CKV_AZURE_41: the value has no natural expiry, and a secret that expires stops the app from resolving it without a warning; rotation is documented in docs/deploy.md.
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 does not look inside the body of a conditional (if) resource.
  parent: vault
  name: consoleSecretName
  properties: {
    value: consoleSecret
    contentType: 'Operator console CSRF signing key'
  }
}

resource pagerDutyRoutingKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(pagerDutyRoutingKey)) {
  // checkov:skip=CKV_AZURE_41: the value has no natural expiry, and a secret that expires stops the app from resolving it without a warning; rotation is documented in docs/deploy.md.
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 does not look inside the body of a conditional (if) resource.
  parent: vault
  name: pagerDutyRoutingKeySecretName
  properties: {
    value: pagerDutyRoutingKey
    contentType: 'PagerDuty Events API v2 routing key'
  }
}

resource alertWebhookSecretResource 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(alertWebhookSecret)) {
  // checkov:skip=CKV_AZURE_41: the value has no natural expiry, and a secret that expires stops the app from resolving it without a warning; rotation is documented in docs/deploy.md.
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 does not look inside the body of a conditional (if) resource.
  parent: vault
  name: alertWebhookSecretName
  properties: {
    value: alertWebhookSecret
    contentType: 'Generic alert webhook HMAC-SHA256 key'
  }
}

output name string = vault.name
// ETG_KEY_VAULT_URL: registry tenants' alert secrets are read from here at run time (kv:<name>).
output uri string = vault.properties.vaultUri
output teamsWebhookSecretUri string = '${vault.properties.vaultUri}secrets/${teamsWebhookSecretName}'
output notificationUrlSecretUri string = '${vault.properties.vaultUri}secrets/${notificationUrlSecretName}'
output notificationClientStateSecretUri string = '${vault.properties.vaultUri}secrets/${notificationClientStateSecretName}'
output consoleSecretUri string = '${vault.properties.vaultUri}secrets/${consoleSecretName}'
output pagerDutyRoutingKeySecretUri string = '${vault.properties.vaultUri}secrets/${pagerDutyRoutingKeySecretName}'
output alertWebhookSecretUri string = '${vault.properties.vaultUri}secrets/${alertWebhookSecretName}'
