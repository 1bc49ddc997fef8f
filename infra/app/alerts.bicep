// Alert rules for the monitor itself: a job failing, the health route answering 503, and the
// scan going silent (health cannot see a timer that stopped). All are log search alerts over the Application Insights component, so no web test (and no key
// for one) is needed. The queries are in alert-queries.json, checked against the records the
// app writes by tests/unit/test_workbook_queries.py.

param location string = resourceGroup().location
param tags object = {}
param applicationInsightsName string
@description('Prefix of the rule and action group names (the function app name).')
param namePrefix string
@description('Email receiver of the action group this module creates. Empty: no receiver.')
param alertEmail string = ''
@description('An existing action group to notify instead of the one created here. Empty: use this module\'s.')
param actionGroupId string = ''

var queries = loadJsonContent('alert-queries.json')

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var emailReceivers = empty(alertEmail) ? [] : [
  {
    name: 'operator'
    emailAddress: alertEmail
    useCommonAlertSchema: true
  }
]

// Action groups are global resources: location 'global'.
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (empty(actionGroupId)) {
  name: 'ag-${take(namePrefix, 50)}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'etgmonitor'
    enabled: true
    emailReceivers: emailReceivers
  }
}

var actionGroups = empty(actionGroupId) ? [actionGroup.id] : [actionGroupId]

resource jobFailing 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-job-failing'
  location: location
  tags: tags
  properties: {
    displayName: 'etg-monitor: a job is failing'
    description: queries.jobFailing.description
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: queries.jobFailing.query
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          dimensions: [
            {
              name: 'job'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

resource healthUnavailable 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-health-503'
  location: location
  tags: tags
  properties: {
    displayName: 'etg-monitor: health answers 503'
    description: queries.healthUnavailable.description
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: queries.healthUnavailable.query
          timeAggregation: 'Total'
          metricMeasureColumn: 'answers'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

// Evaluated over a window three scan periods long, so one late run does not fire it.
resource scanSilent 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-scan-silent'
  location: location
  tags: tags
  properties: {
    displayName: 'etg-monitor: no scan finished in 30 minutes'
    description: queries.scanSilent.description
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    criteria: {
      allOf: [
        {
          query: queries.scanSilent.query
          timeAggregation: 'Total'
          metricMeasureColumn: 'finished'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}
