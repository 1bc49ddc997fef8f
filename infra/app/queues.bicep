// The job queue the timers fan registry tenants' jobs out on (docs/msp.md, "Fan-out"), in the
// storage account that already holds the host's storage and the monitor's tables.
//
// The queue-triggered function reads it through the AzureWebJobsStorage connection, which is
// identity-based (app/api.bicep: AzureWebJobsStorage__credential, __clientId and, with
// enableQueue, __queueServiceUri); the identity holds Storage Queue Data Contributor on the
// account (app/rbac.bicep). A message that failed five times is moved by the Functions host to
// `<queue>-poison` ("Azure Queue storage trigger for Azure Functions", poison messages). The
// host creates that queue itself on the first poison message; it is declared here too so that
// the poison-queue function has a queue to poll from the start, and so that `azd down` and a
// redeploy leave nothing behind the template does not know about.
//
// Both queues exist in every deployment: with an empty tenant registry no message is ever
// written, and an empty queue costs only the host's polling, which backs off to one minute.

param storageAccountName string

@minLength(3)
@maxLength(56) // + '-poison' stays within the 63 characters a queue name may have
param jobQueueName string

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Every StorageV2 account has its one queue service, named 'default'.
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource jobQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: jobQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${jobQueueName}-poison'
}

output jobQueueName string = jobQueue.name
output poisonQueueName string = poisonQueue.name
