"""
The benchmark's one table, in Markdown, with each target of issue 5 beside
the figure it applies to.
"""

from __future__ import annotations

from typing import Any

MiB = 1024 * 1024

#: Names of the processes in the table, by their role in the benchmark.
_ROLES = {
    "fsA": "relocfs",
    "proxy": "relocproxy",
    "haproxy": "HAProxy",
    "portforward": "portforward",
    "sendfile": "sendfile server",
    "reader": "reader",
    "client": "client",
}

#: How the table names each stall case.
_MODES = {
    "steady": "no switch",
    "cold": "one SIGHUP, B hashes the file during the move",
    "warm": "one SIGHUP, B's digest ready",
}

#: The switch-stall targets: p99 of the longest gap, by stream count.
_STALL_TARGETS = {1: 0.010, 1000: 0.100}


def table(document: dict[str, Any]) -> str:
    """
    @return: every figure of one run as one Markdown table, with a heading
        line that names the machine and the settings.
    """
    info = document["machine"]
    settings = info.get("settings", {})
    rows: list[tuple[str, str, str, str, str]] = []
    if "throughput" in document:
        rows += _throughput(document["throughput"], document.get("clients", {}))
    for key in ("identity", "stallIdentity"):
        if key in document:
            figure = document[key]
            rows.append(
                (
                    "identity",
                    f"relocfs answers the first GETID of a "
                    f"{figure['size'] / MiB:.0f} MiB file",
                    f"{figure['seconds']:.2f} s (SHA-256 of the whole file, "
                    f"{figure['size'] / 1e6 / figure['seconds']:.0f} MB/s); "
                    "cached afterwards",
                    "",
                    "",
                )
            )
    if "stall" in document:
        rows += _stall(document["stall"])
    if "slowReader" in document or "stall" in document:
        rows += _memory(document.get("stall", []), document.get("slowReader"))
    if "scale" in document:
        rows += _scale(document["scale"])
    heading = (
        f"reloc benchmark at {info.get('commit', '?')}, {info['date']}: "
        f"{info['cores']} cores "
        f"({info['cpu']}), {info['memory'] / 2**30:.1f} GiB, Linux "
        f"{info['kernel']}, Python {info['python']}, Twisted {info['twisted']}, "
        f"{info['haproxy']}; large file {settings.get('size', 0) / MiB:.0f} MiB "
        f"on {settings.get('shm', '?')}, {settings.get('runs', '?')} runs, "
        f"MB = 10^6 bytes, took {info.get('seconds', 0):.0f} s"
    )
    if settings.get("backlog"):
        heading += f"; listen backlog {settings['backlog']} (not the default)"
    lines = [
        heading,
        "",
        "| part | case | result | target | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu(figures: dict[str, float], extra: str = "") -> str:
    parts = []
    roles = sorted({key.split(".")[0] for key in figures if "." in key})
    for role in roles:
        name = _ROLES.get(role, role)
        if f"{role}.user" in figures:
            user, system = figures[f"{role}.user"], figures[f"{role}.sys"]
            parts.append(f"{name} {user + system:.2f} ({user:.2f}u+{system:.2f}s)")
        elif f"{role}.cpu" in figures:
            parts.append(f"{name} {figures[f'{role}.cpu']:.2f}")
    return "CPU s/GiB: " + ", ".join(parts) + extra


def _throughput(
    paths: dict[str, dict[str, Any]], clients: dict[str, dict[str, float]]
) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for label, figures in paths.items():
        runs = figures["runsMBps"]
        result = (
            f"**{figures['MBps']:.0f} MB/s** (runs {min(runs):.0f}-{max(runs):.0f}); "
            + _cpu(figures)
        )
        rows.append(("throughput", label, result, "", ""))
    proxy = paths.get("relocproxy", {}).get("MBps")
    for label, target, aim in (
        ("HAProxy (mode tcp)", 0.8, "aim 1.0"),
        ("direct relocfs", 0.85, ""),
    ):
        other = paths.get(label, {}).get("MBps")
        if proxy and other:
            ratio = proxy / other
            rows.append(
                (
                    "ratio",
                    f"relocproxy / {label}",
                    f"**{ratio:.2f}**",
                    f">= {target}" + (f", {aim}" if aim else ""),
                    _verdict(ratio >= target, f"gap {target - ratio:.2f}"),
                )
            )
    startup = clients.get("client startup (empty file)", {}).get("seconds", 0.0)
    direct = paths.get("direct relocfs", {}).get("MBps")
    for label in ("HAProxy (mode tcp)", "Twisted portforward"):
        other = paths.get(label, {}).get("MBps")
        if other and direct:
            rows.append(
                (
                    "ratio",
                    f"{label} / direct relocfs (for scale)",
                    f"{other / direct:.2f}",
                    "",
                    "",
                )
            )
    plain = paths.get("direct relocfs", {}).get("MBps")
    viaProxy = paths.get("relocproxy", {}).get("MBps")
    for label, figures in clients.items():
        if "MBps" in figures:
            reference = viaProxy if "relocproxy" in label else plain
            versus = (
                f"; {figures['MBps'] / reference:.2f} of the plain reader"
                if reference
                else ""
            )
            net = ""
            if startup and figures["seconds"] > startup:
                rate = (
                    figures["MBps"]
                    * figures["seconds"]
                    / (figures["seconds"] - startup)
                )
                net = f" ({rate:.0f} MB/s less the {startup:.2f} s start-up)"
            result = f"{figures['MBps']:.0f} MB/s{net}{versus}; " + _cpu(figures)
        else:
            result = (
                f"{figures['seconds']:.2f} s wall, {figures['client.cpu']:.2f} s CPU"
            )
        rows.append(("client", label, result, "", ""))
    return rows


def _stall(figures: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for figure in figures:
        count = figure["streams"]
        gap = figure["gap"] or {}
        case = f"{count} stream{'s' if count > 1 else ''}, " + _MODES[figure["mode"]]
        switched = figure["mode"] != "steady"
        result = (
            f"gap p50 {_ms(gap.get('p50'))}, **p99 {_ms(gap.get('p99'))}**, "
            f"max {_ms(gap.get('max'))}; {figure['MBps']:.0f} MB/s in all"
        )
        if switched:
            took = figure["moveSeconds"]
            when = f" in {took:.2f} s" if took is not None else ""
            result += f"; moved {figure['moved']}/{count}{when}"
            if figure["listenOverflowsMoving"]:
                result += (
                    f"; {figure['listenOverflowsMoving']} connects hit a full "
                    "listen queue"
                )
        if figure["errors"]:
            result += f"; errors {figure['errors']}"
        if figure["notResumed"]:
            result += f"; {figure['notResumed']} never resumed (gap cut at the end)"
        if figure["finishedEarly"]:
            result += f"; {figure['finishedEarly']} ended before the stop"
        target, verdict = "", ""
        limit = _STALL_TARGETS.get(count)
        if switched and limit is not None and gap:
            target = f"p99 < {limit * 1000:.0f} ms"
            moved = figure["moved"] == count and not figure["errors"]
            moved = moved and not figure["notResumed"]
            if figure["moved"] < count and figure["finishedEarly"]:
                verdict = "n/a (streams ended before the move: use a larger file)"
            else:
                verdict = _verdict(gap["p99"] < limit and moved, "missed")
        rows.append(("stall", case, result, target, verdict))
    return rows


def _memory(
    stall: list[dict[str, Any]], slow: dict[str, Any] | None
) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for figure in stall:
        if figure["streams"] < 100:
            continue
        count = figure["streams"]
        perStream = (figure["proxyHWM"] - figure["proxyIdleRSS"]) / count
        kind = _MODES[figure["mode"]]
        rows.append(
            (
                "memory",
                f"proxy peak RSS, {count} streams, {kind}",
                f"VmHWM {figure['proxyHWM'] / MiB:.1f} MiB, idle "
                f"{figure['proxyIdleRSS'] / MiB:.1f} MiB: "
                f"**{perStream / 1024:.1f} KiB per stream**",
                "< 64 KiB per stream" if count == 1000 else "",
                _verdict(perStream < 64 * 1024, "over") if count == 1000 else "",
            )
        )
    if slow is not None:
        rows.append(
            (
                "memory",
                f"proxy RSS, one reader at {slow['rate'] / 1e6:g} MB/s "
                f"for {slow['seconds']:.0f} s",
                f"**growth {slow['growth'] / 1024:.0f} KiB** (RSS "
                f"{slow['rssAt1s'] / MiB:.1f} MiB at 1 s, max "
                f"{slow['rssMax'] / MiB:.1f}, end {slow['rssEnd'] / MiB:.1f}; "
                f"{slow['bytes'] / 1e6:.1f} MB read)",
                "< 8 MiB",
                _verdict(slow["growth"] < 8 * MiB and not slow["error"], "over"),
            )
        )
    return rows


def _scale(figure: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    errors = sum(figure["errors"].values())
    first = figure["firstByte"] or {}
    done = figure["done"] or {}
    result = (
        f"**{figure['ok']}/{figure['streams']} checked, {errors} errors**, "
        f"{figure['seconds']:.1f} s in all ({figure['MBps']:.0f} MB/s); first "
        f"byte p50 {_ms(first.get('p50'))} p99 {_ms(first.get('p99'))}; done "
        f"p50 {done.get('p50', 0):.1f} s max {done.get('max', 0):.1f} s; proxy "
        f"VmHWM {figure['proxyHWM'] / MiB:.0f} MiB; "
        f"{figure['listenOverflows']} connects hit a full listen queue"
    )
    if figure["errors"]:
        result += f"; {figure['errors']}"
    return [
        (
            "scale",
            f"{figure['streams']} x {figure['size'] / MiB:g} MiB via relocproxy",
            result,
            "no error",
            _verdict(errors == 0 and figure["ok"] == figure["streams"], "errors"),
        )
    ]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _verdict(met: bool, otherwise: str) -> str:
    return "met" if met else f"**not met** ({otherwise})"
