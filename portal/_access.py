"""Who sees what: one pure function from (viewer, resource, finance grants, now) to a decision
with its reason (docs/portal.md, "Access rules"). The routes ask it, log finance's accesses and
turn a refusal into a 403 problem detail naming the reason.

- Government (and the regulator's admin) and auditors see everything.
- An enterprise sees its own data in full; other enterprises' only as published aggregates.
- A financial institution sees an enterprise's data only while that enterprise's on-chain
  grant (``data_access.until_at``, block seconds) is later than now; 0 means revoked.
- An aggregate (a sum over a group of enterprises) is published: anyone signed in sees it,
  unless it would disclose the data of exactly one enterprise the viewer may not see (a group
  whose hidden members number 1; with the viewer's own data subtracted, the rest must still be
  at least ``MIN_GROUP`` enterprises).
- The register of enterprises, the market's open offers and its prices are public to anyone
  signed in; the quarantine is for government and auditors; the access log for the government
  (an enterprise sees the log rows about itself).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from portal._viewer import Viewer

#: the fewest hidden enterprises an aggregate may hold (1 would be one enterprise's own data)
MIN_GROUP = 2


class Kind(enum.Enum):
    PUBLIC = "public"  # register, open offers, prices
    ENTERPRISE = "enterprise"  # one enterprise's data (owners: exactly that one)
    AGGREGATE = "aggregate"  # a sum over the owners
    QUARANTINE = "quarantine"
    ACCESS_LOG = "access-log"  # owners: the enterprise the rows are about, or none (all)


@dataclass(frozen=True, slots=True)
class Resource:
    kind: Kind
    owners: tuple[str, ...] = ()

    @classmethod
    def of(cls, enterprise: str) -> Resource:
        return cls(Kind.ENTERPRISE, (enterprise.lower(),))

    @classmethod
    def aggregate(cls, owners: Collection[str]) -> Resource:
        return cls(Kind.AGGREGATE, tuple(sorted(o.lower() for o in owners)))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


def _iso(at_s: int) -> str:
    try:
        return dt.datetime.fromtimestamp(at_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{at_s} (Unix seconds)"


def _one(viewer: Viewer, owner: str, grants: Mapping[str, int], now_s: int) -> Decision:
    if viewer.sees_all:
        return Decision(True, "government and auditors see all data")
    if viewer.is_enterprise and owner == viewer.address:
        return Decision(True, "an enterprise sees its own data")
    if viewer.is_finance:
        if owner not in grants:
            return Decision(False, f"enterprise {owner} has not granted {viewer.address} "
                            "access to its data (MrvRegistry.grantDataAccess)")
        until = grants[owner]
        if until == 0:
            return Decision(False, f"enterprise {owner} has revoked {viewer.address}'s access "
                            "to its data")
        if until <= now_s:
            return Decision(False, f"enterprise {owner}'s grant of access to {viewer.address} "
                            f"expired at {_iso(until)}")
        return Decision(True, f"enterprise {owner} granted access until {_iso(until)}")
    return Decision(False, f"an enterprise sees other enterprises' data ({owner}) only as "
                    "published aggregates")


def decide(viewer: Viewer, resource: Resource, grants: Mapping[str, int],
           now_s: int) -> Decision:
    """May ``viewer`` see ``resource``? ``grants``: the enterprises that granted the viewer (a
    financial institution) access, with ``until_at`` (block seconds, 0 revoked); ``now_s``: the
    portal's clock in Unix seconds."""
    if resource.kind is Kind.PUBLIC:
        return Decision(True, "public to anyone signed in")
    if resource.kind is Kind.QUARANTINE:
        if viewer.sees_all:
            return Decision(True, "government and auditors see the quarantine")
        return Decision(False, "the quarantine is for the government and auditors")
    if resource.kind is Kind.ACCESS_LOG:
        if viewer.roles & {"government", "admin"}:
            return Decision(True, "the government sees the access log")
        if viewer.is_enterprise and resource.owners == (viewer.address,):
            return Decision(True, "an enterprise sees who accessed its data")
        return Decision(False, "the access log is for the government (an enterprise sees "
                        "the rows about itself: filter by enterprise)")
    if resource.kind is Kind.ENTERPRISE:
        if len(resource.owners) != 1:
            return Decision(False, "one enterprise's data names exactly one enterprise")
        return _one(viewer, resource.owners[0], grants, now_s)
    # an aggregate
    if viewer.sees_all:
        return Decision(True, "government and auditors see all data")
    hidden = [o for o in resource.owners if not _one(viewer, o, grants, now_s).allowed]
    if not hidden:
        return Decision(True, "the viewer may see every enterprise in the group")
    if len(hidden) >= MIN_GROUP:
        return Decision(True, f"a published aggregate over {len(hidden)} enterprises the "
                        "viewer may not see individually")
    return Decision(False, "the group holds only one enterprise besides those the viewer may "
                    f"see ({hidden[0]}): its aggregate would disclose that enterprise's data")


def visible(viewer: Viewer, owners: Collection[str], grants: Mapping[str, int],
            now_s: int) -> list[str]:
    """The enterprises among ``owners`` whose data ``viewer`` may see in full."""
    return [o for o in owners if decide(viewer, Resource.of(o), grants, now_s).allowed]
