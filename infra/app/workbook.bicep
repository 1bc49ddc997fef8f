// The monitor's workbook in Azure Monitor, over the Application Insights component the app
// logs to. The queries live in workbook.json, checked in so that they can be reviewed and so
// that tests/unit/test_workbook_queries.py can hold every field they read to the records the
// app really writes.

param location string = resourceGroup().location
param tags object = {}
param applicationInsightsName string
param environmentName string

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// A workbook's name must be a GUID; this one is stable per environment, so a redeployment
// updates the same workbook.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsName, 'etg-monitor-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'etg-monitor (${environmentName})'
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: loadTextContent('workbook.json')
  }
}

output id string = workbook.id
