"""A simulated Microsoft tenant for tests and demos: Graph stand-in, Teams webhook, Azurite."""

from devtools.simtenant.clock import SimClock
from devtools.simtenant.faults import FaultPlan, FaultRule
from devtools.simtenant.generate import add_deployments, generate_scale_scenario
from devtools.simtenant.scenario import (
    PROVISIONING_CLIENT_APP_ID,
    Deployment,
    DeviceSpec,
    DirectoryDevice,
    DirectoryMembershipEvent,
    Group,
    InstallItem,
    MembershipEvent,
    Policy,
    ProvisioningClient,
    Scenario,
    ScenarioError,
    User,
    demo_scenario,
    demo_scenario_path,
    load_scenario,
)
from devtools.simtenant.server import SimulatedTenant, build_app
from devtools.simtenant.state import TenantState
from devtools.simtenant.subscriptions import SubscriptionService
from devtools.simtenant.teams import TeamsMessage

__all__ = [
    "PROVISIONING_CLIENT_APP_ID",
    "Deployment",
    "DeviceSpec",
    "DirectoryDevice",
    "DirectoryMembershipEvent",
    "FaultPlan",
    "FaultRule",
    "Group",
    "InstallItem",
    "MembershipEvent",
    "Policy",
    "ProvisioningClient",
    "Scenario",
    "ScenarioError",
    "SimClock",
    "SimulatedTenant",
    "SubscriptionService",
    "TeamsMessage",
    "TenantState",
    "User",
    "add_deployments",
    "build_app",
    "demo_scenario",
    "demo_scenario_path",
    "generate_scale_scenario",
    "load_scenario",
]
