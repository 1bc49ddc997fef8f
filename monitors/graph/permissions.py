"""Least-privilege application permission behind each Graph call the monitor makes."""

CONFIGURATION_POLICIES = "DeviceManagementConfiguration.Read.All"
GROUP_READ = "GroupMember.Read.All"
SERVICE_PRINCIPALS = "Application.Read.All"
MANAGED_DEVICES = "DeviceManagementManagedDevices.Read.All"
REPORT_EXPORT = "DeviceManagementManagedDevices.ReadWrite.All"
DEVICES = "Device.Read.All"
AUDIT_LOGS = "AuditLog.Read.All"
USERS = "User.Read.All"  # with GroupMember.Read.All: a user's groups (checkMemberGroups)
USER_GROUPS = f"{USERS} and {GROUP_READ}"
GROUP_SUBSCRIPTIONS = "Group.Read.All"
APPS = "DeviceManagementApps.Read.All"  # the apps a policy selects, and their assignments
