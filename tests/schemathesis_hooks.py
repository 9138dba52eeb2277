"""schemathesis hooks for scripts/schemathesis.sh (loaded by tests/schemathesis.toml).

A few rules of the HTTP API tie one member of a body to another: a number at most
another number, an ACL's resource name and its type. The OpenAPI document states them in prose (docs/http-api.md too);
JSON Schema cannot compare two values, so schemathesis would call a body that breaks
one "valid" and count its 400 as a finding. Only such bodies are left out, and only
from the cases meant to be valid: every other member and rule is still checked, and
the cases meant to be invalid are left as they are.
"""

import schemathesis
from schemathesis import GenerationMode

# Ferry's defaults for members left out of POST /v1/subscriptions (docs/http-api.md).
MAX_IN_FLIGHT = 10_000
MAX_IN_FLIGHT_PER_CONSUMER = 1_000
MAX_DELAY_MS = 3_600_000


def _int(v, default):
    """`v` as Ferry reads an integer member (`300.0` counts), else `default`."""
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return default


def subscription_rules_hold(body):
    """The rules between members of POST /v1/subscriptions (`invalid-config`)."""
    in_flight = _int(body.get("max_in_flight"), MAX_IN_FLIGHT)
    per_consumer = _int(
        body.get("max_in_flight_per_consumer"),
        min(MAX_IN_FLIGHT_PER_CONSUMER, in_flight),
    )
    if per_consumer > in_flight:
        return False
    push = body.get("push")
    if isinstance(push, dict) and _int(push.get("concurrency"), 16) > per_consumer:
        return False
    retry = body.get("retry")
    if isinstance(retry, dict):
        if _int(retry.get("delay_ms"), 0) > _int(retry.get("max_delay_ms"), MAX_DELAY_MS):
            return False
    name = body.get("name")
    dead_letter = body.get("dead_letter_topic")
    if dead_letter is None and _int(body.get("max_deliveries"), 1) > 0 and isinstance(name, str):
        dead_letter = f"{name}-dlq"
    if dead_letter is not None and dead_letter == body.get("topic"):
        return False
    return True


def acl_rules_hold(body):
    """The rules between members of an ACL in POST /v1/acls (`invalid-json`,
    `invalid-acl`): a resource name is needed except for the cluster, whose one name is
    `kafka-cluster`, and a prefixed pattern cannot be `*`."""
    acls = body.get("acls")
    if not isinstance(acls, list):
        return True
    for acl in acls:
        if not isinstance(acl, dict):
            continue
        rtype, name = acl.get("resource_type"), acl.get("resource_name")
        if rtype == "cluster" and name not in (None, "kafka-cluster"):
            return False
        if rtype != "cluster" and name is None:
            return False
        if acl.get("pattern_type") == "prefixed" and name == "*":
            return False
    return True


@schemathesis.hook
def filter_case(ctx, case):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return True
    if case.method.upper() == "POST" and case.path == "/v1/subscriptions":
        if isinstance(case.body, dict):
            return subscription_rules_hold(case.body)
    if case.method.upper() == "POST" and case.path == "/v1/acls":
        if isinstance(case.body, dict):
            return acl_rules_hold(case.body)
    return True
