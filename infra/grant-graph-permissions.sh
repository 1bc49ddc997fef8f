#!/usr/bin/env bash
# Grants the etg-monitor managed identity its Microsoft Graph application permissions, with
# `az rest`. The same as grant-graph-permissions.ps1: looks up the identity's service principal
# and Microsoft Graph's, assigns only the app roles that are missing, prints what it granted and
# what was already there, never removes anything. With --write-principal-id it also grants the
# remediation write identity its three write permissions (and nothing else).
#
# Run as Privileged Role Administrator or Global Administrator after `az login`. Assigning an
# application permission to a managed identity is the admin consent: there is no other step.
# Managed identity tokens are cached: allow up to 24 hours for a new permission to take effect.
#
# Usage:
#   infra/grant-graph-permissions.sh --client-id <identity client id> [--include-report-export] [--write-principal-id <id>] [--dry-run]
#   infra/grant-graph-permissions.sh --principal-id <identity object id> [--include-report-export] [--write-principal-id <id>] [--dry-run]
#   infra/grant-graph-permissions.sh --write-principal-id <write identity object id> [--dry-run]
# The client id is `azd env get-value AZURE_FUNCTION_IDENTITY_CLIENT_ID`; the write identity's
# object id is `azd env get-value AZURE_REMEDIATION_IDENTITY_PRINCIPAL_ID` (enableRemediation).
# GRAPH_ENDPOINT=https://graph.microsoft.us (etc.) for a national cloud (`az cloud set` first).
set -euo pipefail

graph="${GRAPH_ENDPOINT:-https://graph.microsoft.com}"
graph_app_id="00000003-0000-0000-c000-000000000000"
client_id=""
principal_id=""
write_principal_id=""
include_report_export=false
dry_run=false

usage() {
  sed -n '12,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --client-id) client_id="${2:-}"; shift 2 ;;
    --principal-id) principal_id="${2:-}"; shift 2 ;;
    --write-principal-id) write_principal_id="${2:-}"; shift 2 ;;
    --include-report-export) include_report_export=true; shift ;;
    --dry-run | --what-if) dry_run=true; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
if [[ -z "$client_id" && -z "$principal_id" && -z "$write_principal_id" ]]; then usage; fi

guid='^[0-9a-fA-F-]{36}$'
for value in "$client_id" "$principal_id" "$write_principal_id"; do
  if [[ -n "$value" && ! "$value" =~ $guid ]]; then
    echo "not an id: $value" >&2
    exit 2
  fi
done

if [[ -n "$write_principal_id" && "${write_principal_id,,}" == "${principal_id,,}" ]]; then
  # The read identity stays read-only: writes need an identity of their own.
  echo "--write-principal-id must be the write identity, not the read identity." >&2
  exit 2
fi

# Least privilege; keep equal to infra/app/graph-permissions.bicep,
# infra/grant-graph-permissions.ps1 and docs/permissions.md.
permissions=(
  DeviceManagementConfiguration.Read.All  # device preparation policies and their ETG
  DeviceManagementManagedDevices.Read.All # managed devices: Entra device id, enrollment profile
  DeviceManagementApps.Read.All           # the apps a policy selects, and their assignments
  GroupMember.Read.All                    # ETG properties, owners, membership
  Device.Read.All                         # Entra device object ids
  AuditLog.Read.All                       # Add/Remove member to group events
  Directory.Read.All                      # documented alongside AuditLog.Read.All for directory audits
  Application.Read.All                    # the Intune Provisioning Client service principal
  Group.Read.All                          # change-notification subscriptions on the ETGs
  User.Read.All                           # the enrolling user's groups: which policy applied
)
report_export="DeviceManagementManagedDevices.ReadWrite.All"
if [[ "$include_report_export" == true ]]; then permissions+=("$report_export"); fi

# The write identity (remediation) only. group-post-members.md: adding a device member needs
# GroupMember.ReadWrite.All and Device.ReadWrite.All; group-post-owners.md: adding an owner
# needs Group.ReadWrite.All. Keep equal to infra/app/graph-permissions.bicep (writePermissions).
write_permissions=(
  GroupMember.ReadWrite.All # POST /groups/{id}/members/$ref
  Device.ReadWrite.All      # with GroupMember.ReadWrite.All when the member is a device
  Group.ReadWrite.All       # POST /groups/{id}/owners/$ref: the provisioning client as ETG owner
)

# Microsoft Graph's service principal and its application permissions (name <TAB> id)
graph_sp_id=$(az rest --method get \
  --url "$graph/v1.0/servicePrincipals?\$filter=appId%20eq%20'$graph_app_id'&\$select=id" \
  --query "value[0].id" -o tsv)
roles=$(az rest --method get \
  --url "$graph/v1.0/servicePrincipals/$graph_sp_id?\$select=appRoles" \
  --query "appRoles[?contains(allowedMemberTypes, 'Application')].[value, id]" -o tsv)

granted=0 already=0 failed=0

# grant <label> <client id or ""> <object id or ""> <permission>...
grant() {
  local label="$1" by_client="$2" by_object="$3"
  shift 3
  local identity sp_id sp_name held wanted_ids="" name role_id body extra hint
  # 1. the identity's service principal
  if [[ -n "$by_client" ]]; then
    identity=$(az rest --method get \
      --url "$graph/v1.0/servicePrincipals?\$filter=appId%20eq%20'$by_client'&\$select=id,displayName" \
      --query "value[0].[id, displayName]" -o tsv)
  else
    identity=$(az rest --method get \
      --url "$graph/v1.0/servicePrincipals/$by_object?\$select=id,displayName" \
      --query "[id, displayName]" -o tsv 2>/dev/null || true)
  fi
  sp_id="" sp_name=""
  IFS=$'\t' read -r sp_id sp_name <<<"$identity" || true
  if [[ -z "$sp_id" ]]; then
    echo "No service principal for the $label ${by_client:-$by_object} in this tenant." >&2
    failed=$((failed + 1))
    return
  fi

  # 2. what the identity already holds on Graph
  held=$(az rest --method get \
    --url "$graph/v1.0/servicePrincipals/$sp_id/appRoleAssignments" \
    --query "value[?resourceId=='$graph_sp_id'].appRoleId" -o tsv)

  echo "$label: $sp_name (object id $sp_id)"
  for name in "$@"; do
    role_id=$(printf '%s\n' "$roles" | awk -F '\t' -v n="$name" '$1 == n { print $2 }')
    if [[ -z "$role_id" ]]; then
      echo "  ERROR            Graph has no application permission named $name" >&2
      failed=$((failed + 1))
      continue
    fi
    wanted_ids+="$role_id "
    if grep -qx "$role_id" <<<"$held"; then
      echo "  already granted  $name"
      already=$((already + 1))
      continue
    fi
    if [[ "$dry_run" == true ]]; then
      echo "  would grant      $name"
      continue
    fi
    body=$(printf '{"principalId":"%s","resourceId":"%s","appRoleId":"%s"}' "$sp_id" "$graph_sp_id" "$role_id")
    if az rest --method post --url "$graph/v1.0/servicePrincipals/$sp_id/appRoleAssignments" \
      --headers "Content-Type=application/json" --body "$body" --output none; then
      echo "  granted          $name"
      granted=$((granted + 1))
    else
      echo "  FAILED           $name" >&2
      failed=$((failed + 1))
    fi
  done

  # Roles beyond the list are reported, never removed.
  while IFS= read -r role_id; do
    [[ -z "$role_id" ]] && continue
    case " $wanted_ids " in *" $role_id "*) continue ;; esac
    extra=$(printf '%s\n' "$roles" | awk -F '\t' -v i="$role_id" '$2 == i { print $1 }')
    hint=""
    if [[ "$label" == "Managed identity" && "$extra" == "$report_export" ]]; then
      hint=" (needed for the deployment report: run with --include-report-export)"
    fi
    echo "  also holds       ${extra:-$role_id}$hint"
  done <<<"$held"
}

if [[ -n "$client_id" || -n "$principal_id" ]]; then
  grant "Managed identity" "$client_id" "$principal_id" "${permissions[@]}"
fi
if [[ -n "$write_principal_id" ]]; then
  grant "Write identity (remediation)" "" "$write_principal_id" "${write_permissions[@]}"
fi

echo "Done: $granted granted, $already already granted, $failed failed."
[[ "$failed" -eq 0 ]]
