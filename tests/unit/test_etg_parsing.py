import pytest

from monitors.graph.errors import MalformedResponse
from monitors.graph.policies import is_device_preparation, parse_etg_response, parse_policy

G1 = "11111111-1111-1111-1111-111111111111"
G2 = "22222222-2222-2222-2222-222222222222"


def test_documented_shape_gives_group_and_intune_validation_code():
    lookup = parse_etg_response(
        {
            "@odata.context": "x",
            "validationSucceeded": False,
            "enrollmentTimeDeviceMembershipTargetValidationStatuses": [
                {
                    "targetId": G1,
                    "validationSucceeded": False,
                    "targetValidationErrorCode": "firstPartyAppNotAnOwner",
                }
            ],
        },
        "a",
    )
    assert lookup.group_ids == (G1,)
    assert lookup.validation_error(G1) == "firstPartyAppNotAnOwner"


def test_documented_shape_success_carries_no_validation_error():
    lookup = parse_etg_response(
        {
            "validationSucceeded": True,
            "enrollmentTimeDeviceMembershipTargetValidationStatuses": [
                {
                    "targetId": G1,
                    "validationSucceeded": True,
                    "targetValidationErrorCode": "unknown",
                }
            ],
        },
        "a",
    )
    assert lookup.group_ids == (G1,)
    assert lookup.validation_errors == ()


def test_documented_shape_with_no_statuses_means_not_configured():
    lookup = parse_etg_response(
        {
            "validationSucceeded": False,
            "enrollmentTimeDeviceMembershipTargetValidationStatuses": [],
        },
        "a",
    )
    assert lookup.group_ids == ()


@pytest.mark.parametrize(
    "wrap", [lambda x: x, lambda x: {"value": x}, lambda x: {"@odata.context": "c", "value": x}]
)
def test_targets_shape_plain_or_wrapped_in_value(wrap):
    body = {
        "enrollmentTimeDeviceMembershipTargets": [
            {"targetType": "staticSecurityGroup", "targetId": G1},
            {"targetType": "staticSecurityGroup", "targetId": G2},
        ]
    }
    assert parse_etg_response(wrap(body), "a").group_ids == (G1, G2)


def test_just_in_time_shape():
    body = {"value": {"targetType": "entraSecurityGroup", "target": [G1]}}
    assert parse_etg_response(body, "jit").group_ids == (G1,)


def test_just_in_time_shape_without_target_means_not_configured():
    body = {"value": {"targetType": "entraSecurityGroup", "target": []}}
    assert parse_etg_response(body, "jit").group_ids == ()


@pytest.mark.parametrize(
    "body",
    [
        None,
        "text",
        42,
        {"unexpected": True},
        {"value": [1, 2]},
        {"enrollmentTimeDeviceMembershipTargets": [{"targetType": "x"}]},
        {"enrollmentTimeDeviceMembershipTargetValidationStatuses": [{"validationSucceeded": True}]},
        {"value": {"targetType": "entraSecurityGroup", "target": [1]}},
    ],
)
def test_unknown_or_broken_shapes_are_malformed_not_guessed(body):
    with pytest.raises(MalformedResponse):
        parse_etg_response(body, "a")


def test_device_preparation_policies_match_family_and_base_template_not_suffix():
    item = {
        "templateReference": {
            "templateFamily": "enrollmentConfiguration",
            "templateId": "80d33118-b7b4-40d8-b15f-81be745e053f_7",
        }
    }
    assert is_device_preparation(item)
    item["templateReference"]["templateFamily"] = "endpointSecurityAntivirus"
    assert not is_device_preparation(item)
    assert not is_device_preparation({"templateReference": None})


def test_policy_settings_give_timeout_and_allowed_ids():
    item = {
        "id": "p1",
        "name": "Standard",
        "templateReference": {"templateId": "80d33118-b7b4-40d8-b15f-81be745e053f_1"},
        "settings": [
            {
                "settingInstance": {
                    "settingDefinitionId": "enrollment_autopilot_dpp_timeout",
                    "simpleSettingValue": {"value": 90},
                }
            },
            {
                "settingInstance": {
                    "settingDefinitionId": "enrollment_autopilot_dpp_allowedappids",
                    "simpleSettingCollectionValue": [
                        {"value": '{"id":"app-1","type":"#microsoft.graph.win32LobApp"}'},
                        {"value": "app-2"},
                    ],
                }
            },
            {"settingInstance": {"settingDefinitionId": "enrollment_autopilot_dpp_timeout_x"}},
        ],
    }
    policy = parse_policy(item)
    assert policy.timeout_minutes == 90
    assert policy.allowed_app_ids == ("app-1", "app-2")


def test_policy_assignment_targets_are_read_as_intune_applies_them():
    from monitors.graph.errors import MalformedResponse
    from monitors.graph.policies import _assignment

    g1, g2 = "0b7d5a3e-6c1f-4e8a-9d2b-5f4a3c2e1d01", "0b7d5a3e-6c1f-4e8a-9d2b-5f4a3c2e1d02"
    items = [
        {"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": g1}},
        {
            "target": {
                "@odata.type": "#microsoft.graph.exclusionGroupAssignmentTarget",
                "groupId": g2,
            }
        },
        {"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}},
    ]
    assignment = _assignment(items)
    assert assignment.include_groups == (g1,) and assignment.exclude_groups == (g2,)
    assert assignment.includes({g1}) and not assignment.includes({g1, g2})
    assert not assignment.includes(set())  # all devices names no user
    everyone = _assignment(
        [{"target": {"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget"}}]
    )
    assert everyone.includes(set()) and everyone.includes({g2})
    with pytest.raises(MalformedResponse):
        _assignment(
            [
                {
                    "target": {
                        "@odata.type": "#microsoft.graph.groupAssignmentTarget",
                        "groupId": "id-value",
                    }
                }
            ]
        )
