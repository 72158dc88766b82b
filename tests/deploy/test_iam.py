"""deploy/iam: least privilege, a trust policy for exactly the worker's ServiceAccount, and the
fact the README states: GlobalSignOut needs no IAM (botocore sends it unsigned)."""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import yaml

from tests.deploy.conftest import K8S, REPO

IAM = REPO / "deploy" / "iam"
POOL_ARN = re.compile(r"arn:aws:cognito-idp:[a-z0-9-]+:\d{12}:userpool/[a-z0-9-]+_[A-Za-z0-9]+")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((IAM / name).read_text())
    return document


ROLE_ARN = re.compile(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+")


def statements() -> dict[str, dict[str, Any]]:
    policy = load("signout-worker-policy.json")
    assert policy["Version"] == "2012-10-17"
    return {s["Action"]: s for s in policy["Statement"]}


def test_policy_allows_only_admin_sign_out_and_assuming_named_roles() -> None:
    assert set(statements()) == {"cognito-idp:AdminUserGlobalSignOut", "sts:AssumeRole"}
    for statement in statements().values():
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "Condition"} & statement.keys()
    roles = statements()["sts:AssumeRole"]["Resource"]
    assert roles
    assert all(ROLE_ARN.fullmatch(arn) for arn in roles), roles


def test_policy_allows_only_admin_sign_out_on_named_pools() -> None:
    statement = statements()["cognito-idp:AdminUserGlobalSignOut"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "cognito-idp:AdminUserGlobalSignOut"
    assert not {"NotAction", "NotResource", "Condition"} & statement.keys()
    resources = statement["Resource"]
    assert resources
    assert all(POOL_ARN.fullmatch(arn) for arn in resources), resources


def test_trust_policy_admits_only_the_worker_service_account() -> None:
    (statement,) = load("irsa-trust-policy.json")["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert ":oidc-provider/oidc.eks." in statement["Principal"]["Federated"]
    conditions = statement["Condition"]["StringEquals"]
    subjects = [v for k, v in conditions.items() if k.endswith(":sub")]
    audiences = [v for k, v in conditions.items() if k.endswith(":aud")]
    prod = yaml.safe_load((K8S / "overlays/prod/kustomization.yaml").read_text())
    account = yaml.safe_load((K8S / "base/serviceaccount.yaml").read_text())
    expected = f"system:serviceaccount:{prod['namespace']}:{account['metadata']['name']}"
    assert subjects == [expected]
    assert audiences == ["sts.amazonaws.com"]


def test_global_sign_out_is_unsigned_and_admin_sign_out_is_not() -> None:
    model = botocore.session.get_session().get_service_model("cognito-idp")
    assert model.operation_model("GlobalSignOut").auth_type == "none"
    assert model.operation_model("AdminUserGlobalSignOut").auth_type != "none"
