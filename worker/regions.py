"""The AWS Regions a user pool can live in, as botocore knows them for cognito-idp, and pool ids.

Computed once from botocore's own endpoint data (partitions aws, aws-us-gov and aws-cn): a Region
that is not listed here is never called, whatever a token or a setting says.
"""

from __future__ import annotations

import re
from functools import cache

import botocore.session

SERVICE = "cognito-idp"
PARTITIONS = ("aws", "aws-us-gov", "aws-cn")
# A user pool id is its Region, an underscore and an alphanumeric suffix (eu-west-1_AbC123).
POOL_ID = re.compile(r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)_[0-9A-Za-z]+")


@cache
def dns_suffixes() -> dict[str, str]:
    """Region -> the DNS suffix of its partition, for every Region with a cognito-idp endpoint."""
    session = botocore.session.Session()
    partitions = session.get_data("endpoints")["partitions"]
    suffix = {p["partition"]: str(p["dnsSuffix"]) for p in partitions}
    return {
        region: suffix[partition]
        for partition in PARTITIONS
        for region in session.get_available_regions(SERVICE, partition_name=partition)
    }


def is_known(region: str) -> bool:
    return region in dns_suffixes()


def pool_region(pool_id: str) -> str | None:
    """The Region a well-formed pool id names (known or not), else None."""
    match = POOL_ID.fullmatch(pool_id)
    return match["region"] if match else None
