"""Evaluates every panel of Grafana's "Node Exporter Full" dashboard (grafana.com 1860)
against a running Prometheus, once per scrape job, and prints how many panels have data for
each and which panels differ. Used by node_exporter_full_panels.sh; standard library only.

A panel has data for a job when at least one of its targets' `expr`, with the dashboard's
template variables set the way Grafana would set them for that job, returns a non-empty
result from an instant query.

usage: node_exporter_full_panels.py PROMETHEUS_URL DASHBOARD.json RATE_INTERVAL
           LABEL=JOB=INSTANCE LABEL=JOB=INSTANCE
"""

import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# PromQL's keywords and aggregation operators: identifiers that are not metric names.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "sum", "min", "max", "avg", "count", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values", "group", "inf", "nan",
}


def fail(message):
    print(f"node_exporter_full_panels: {message}", file=sys.stderr)
    sys.exit(2)


def query(prometheus, expr):
    """Instant query; the result list (empty when no series)."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        # A query Prometheus refuses (bad substitution) is reported, not taken for "no data".
        detail = e.read().decode("utf-8", "replace")
        raise RuntimeError(f"Prometheus refused {expr!r}: {e.code} {detail}") from e
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus answered {body} for {expr!r}")
    result = body["data"]["result"]
    # Scalars and strings are single values; vectors and matrices are lists of series.
    if body["data"]["resultType"] in ("scalar", "string"):
        return [result]
    return result


def panels_of(panels):
    """Every panel with targets, rows' nested panels included, in dashboard order."""
    for panel in panels:
        yield from panels_of(panel.get("panels") or [])
        if panel.get("type") != "row" and panel.get("targets"):
            yield panel


def substitute(expr, variables):
    """Grafana's variable forms: $name, ${name}, ${name:format}, [[name]]."""

    def value(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in variables:
            raise KeyError(name)
        return variables[name]

    return re.sub(
        r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)", value, expr
    )


def metric_names(expr):
    """The metric names an expression reads (a panel's list of what it needs)."""
    # Drop what holds label names, strings and durations, then take the identifiers left that
    # are not functions or keywords.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare
    )
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        word = match.group(0)
        if bare[match.end():].lstrip().startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if re.match(r"^\d", bare[max(match.start() - 1, 0):match.start()]):
            continue  # a unit suffix such as the e of 1e9
        names.add(word)
    return names


def seconds(duration):
    """Seconds of a PromQL duration given in whole seconds or minutes (30s, 1m)."""
    match = re.fullmatch(r"(\d+)([sm])", duration)
    if not match:
        fail(f"RATE_INTERVAL {duration!r} is not a duration in s or m such as 30s or 1m")
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def variables_for(prometheus, job, instance, rate_interval):
    """The dashboard's variables as Grafana sets them when JOB and its node are picked:
    nodename and node come from node_uname_info, as the dashboard's own variable queries do."""
    uname = query(prometheus, f'node_uname_info{{job="{job}"}}')
    nodenames = sorted({s["metric"].get("nodename", "") for s in uname})
    note = ""
    if not uname:
        note = (f"node_uname_info has no series for job {job}: Grafana would offer no node; "
                f"evaluated with instance {instance}")
    return {
        "job": job,
        "nodename": nodenames[0] if nodenames else "",
        "node": instance,
        "instance": instance,
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": rate_interval,
        "__range_s": str(seconds(rate_interval)),
    }, note


def main():
    if len(sys.argv) != 6:
        fail("usage: node_exporter_full_panels.py PROMETHEUS_URL DASHBOARD.json "
             "RATE_INTERVAL LABEL=JOB=INSTANCE LABEL=JOB=INSTANCE")
    prometheus, dashboard_path, rate_interval = sys.argv[1:4]
    sides = []
    for arg in sys.argv[4:]:
        try:
            label, job, instance = arg.split("=", 2)
        except ValueError:
            fail(f"{arg!r} is not LABEL=JOB=INSTANCE")
        sides.append((label, job, instance))
    try:
        with open(dashboard_path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read the dashboard {dashboard_path}: {e}")
    dashboard = dashboard.get("dashboard", dashboard)  # grafana.com's export wraps it
    if "panels" not in dashboard:
        fail(f"{dashboard_path} has no 'panels': not a Grafana dashboard JSON")

    panels = list(panels_of(dashboard["panels"]))
    has_data = {label: set() for label, _, _ in sides}
    series = {label: {} for label, _, _ in sides}  # panel index -> series its targets returned
    names_of = {}
    titles = {}
    for label, job, instance in sides:
        variables, note = variables_for(prometheus, job, instance, rate_interval)
        if note:
            print(f"note ({label}): {note}")
        for index, panel in enumerate(panels):
            titles[index] = panel.get("title") or f"(untitled panel {panel.get('id')})"
            names = names_of.setdefault(index, set())
            for target in panel["targets"]:
                expr = target.get("expr")
                if not expr or target.get("hide"):
                    continue
                try:
                    expr = substitute(expr, variables)
                except KeyError as e:
                    fail(f"panel {titles[index]!r} uses the unknown variable ${e.args[0]}")
                names |= metric_names(expr)
                result = query(prometheus, expr)
                series[label][index] = series[label].get(index, 0) + len(result)
                if result:
                    has_data[label].add(index)

    print(f"dashboard: {dashboard.get('title')} (revision {dashboard.get('version')}), "
          f"$__rate_interval = {rate_interval}")
    print(f"panels evaluated: {len(panels)}")
    for label, job, instance in sides:
        print(f"panels with data, {label} (job {job}, instance {instance}): "
              f"{len(has_data[label])}")
    for (a, _, _), (b, _, _) in [(sides[0], sides[1]), (sides[1], sides[0])]:
        only = sorted(has_data[a] - has_data[b])
        print(f"\npanels with data for {a} only: {len(only)}")
        for index in only:
            print(f"  {titles[index]}: {', '.join(sorted(names_of[index]))}")
    # Panels with data on both sides whose queries return fewer series on one: a device,
    # mode or label value one side lacks.
    (a, _, _), (b, _, _) = sides
    fewer = sorted(
        index for index in has_data[a] & has_data[b] if series[a][index] != series[b][index]
    )
    print(f"\npanels with data for both, series counts differing ({a} / {b}): {len(fewer)}")
    for index in fewer:
        print(f"  {titles[index]}: {series[a][index]} / {series[b][index]}: "
              f"{', '.join(sorted(names_of[index]))}")
    neither = sorted(set(range(len(panels))) - has_data[sides[0][0]] - has_data[sides[1][0]])
    print(f"\npanels with data for neither: {len(neither)}")
    for index in neither:
        print(f"  {titles[index]}: {', '.join(sorted(names_of[index]))}")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError) as e:
        fail(str(e))
