"""schemathesis hooks for scripts/schemathesis.sh (loaded by tests/schemathesis.toml).

A few rules of the HTTP API tie one member of a body to another: a number at most
another number, an ACL's resource name and its type. The OpenAPI document states them in prose (docs/http-api.md too);
JSON Schema cannot compare two values, so schemathesis would call a body that breaks
one "valid" and count its 400 as a finding. Only such bodies are left out, and only
from the cases meant to be valid: every other member and rule is still checked, and
the cases meant to be invalid are left as they are.

Postgres sources are checked against their database when created: no database answers
at the URLs schemathesis makes up, and reaching for one can take the whole connect
timeout (10 s). Every source URL that is a Postgres URL is pointed at a port that
refuses at once, so the answer is 422 `source-unreachable` without waiting; the
document gives 422 for that, and tests/schemathesis.toml counts it as an answer to a
valid request.
"""

import schemathesis
from schemathesis import GenerationMode

# Ferry's defaults for members left out of POST /v1/subscriptions (docs/http-api.md).
MAX_IN_FLIGHT = 10_000
MAX_IN_FLIGHT_PER_CONSUMER = 1_000
MAX_DELAY_MS = 3_600_000

# A Postgres URL that parses and is refused at once: nothing listens on port 1.
UNREACHABLE_SOURCE_URL = "postgres://nobody:x@127.0.0.1:1/none"

# Rules of POST /v1/sources that count bytes where JSON Schema counts characters.
TEMPLATE_BYTES_MAX = 200
TABLE_PART_BYTES_MAX = 63


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


def topic_rules_hold(body):
    """The rule between members of POST /v1/topics (`invalid-config`): a compacted
    topic's `max_compaction_lag_ms` is at least its `min_compaction_lag_ms`."""
    low = _int(body.get("min_compaction_lag_ms"), 0)
    high = _int(body.get("max_compaction_lag_ms"), 2**63 - 1)
    return low <= high


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


def _utf8_len(s):
    return len(s.encode("utf-8", "surrogatepass"))


def _table_fits(t):
    """A `schema.table` name whose parts are at most 63 bytes (split at the first `.`)."""
    if not isinstance(t, str):
        return True
    return all(_utf8_len(part) <= TABLE_PART_BYTES_MAX for part in t.split(".", 1))


def source_rules_hold(body):
    """The limits of POST /v1/sources in bytes (`invalid-source`): templates of at most
    200 bytes, table name parts of at most 63; the document gives them in characters,
    which is the same for ASCII."""
    templates = [body.get("topic_template"), body.get("messages_topic_template")]
    outbox = body.get("outbox")
    if isinstance(outbox, dict):
        templates.append(outbox.get("topic_template"))
        if not _table_fits(outbox.get("table")):
            return False
    for t in templates:
        if isinstance(t, str) and _utf8_len(t) > TEMPLATE_BYTES_MAX:
            return False
    tables = body.get("tables")
    if isinstance(tables, list):
        names = []
        for t in tables:
            if isinstance(t, dict):
                where = t.get("where")
                if isinstance(where, str) and not _row_filter_holds(where):
                    return False
                topic = t.get("topic")
                if isinstance(topic, str) and _utf8_len(topic) > 249:
                    return False
                key = t.get("key")
                if isinstance(key, list) and any(
                    isinstance(k, str) and _utf8_len(k) > 63 for k in key
                ):
                    return False
                t = t.get("table")
            if not _table_fits(t):
                return False
            if isinstance(t, str):
                schema, _, name = t.partition(".") if "." in t else ("public", "", t)
                names.append((schema, name))
        # A table named twice is refused.
        if len(names) != len(set(names)):
            return False
    return True


def _row_filter_holds(where):
    """A row filter is one condition: no comments, no NUL, no backslash or `$`, quotes
    closed, and parentheses balanced outside quotes; not only blanks (the document only
    rules out `;`). The same scan as the server's `check_row_filter`."""
    if not where.strip() or "--" in where or "/*" in where or "\0" in where:
        return False
    if "\\" in where or "$" in where or _utf8_len(where) > 4096:
        return False
    depth, quote = 0, None
    for c in where:
        if quote is not None:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return False
    return quote is None and depth == 0


def backfill_rules_hold(body):
    """The rules of POST /v1/sources/{name}/backfills the document cannot state
    (`invalid-source`): table name parts of at most 63 bytes, and a `where` that is one
    condition, as in a source's tables."""
    if not _table_fits(body.get("table")):
        return False
    where = body.get("where")
    return not isinstance(where, str) or _row_filter_holds(where)


def _is_source_write(case):
    method = case.method.upper()
    return (method == "POST" and case.path == "/v1/sources") or (
        method == "PATCH" and case.path == "/v1/sources/{name}"
    )


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Points a source's Postgres URL at a port that refuses at once (see above). Only a
    string that already starts as a Postgres URL is replaced, so a case meant to be
    invalid stays invalid."""
    if _is_source_write(case) and isinstance(case.body, dict):
        url = case.body.get("url")
        if isinstance(url, str) and url.startswith(("postgres://", "postgresql://")):
            case.body["url"] = UNREACHABLE_SOURCE_URL


@schemathesis.hook
def filter_case(ctx, case):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return True
    if case.method.upper() == "POST" and case.path == "/v1/subscriptions":
        if isinstance(case.body, dict):
            return subscription_rules_hold(case.body)
    if case.method.upper() == "POST" and case.path == "/v1/topics":
        if isinstance(case.body, dict):
            return topic_rules_hold(case.body)
    if case.method.upper() == "POST" and case.path == "/v1/acls":
        if isinstance(case.body, dict):
            return acl_rules_hold(case.body)
    if _is_source_write(case) and isinstance(case.body, dict):
        return source_rules_hold(case.body)
    if case.method.upper() == "POST" and case.path == "/v1/sources/{name}/backfills":
        if isinstance(case.body, dict):
            return backfill_rules_hold(case.body)
    return True
