"""`check-config`: the effective configuration, as TOML a user could paste back."""

import os

from pgpool_anycast_hook.config import Config, resolve_main_file
from pgpool_anycast_hook.pgpool_conf import read_pgpool_conf


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(str(v)) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def config_report(config: Config, explicit: str | None) -> str:
    main_file, _ = resolve_main_file(explicit)
    settings = read_pgpool_conf(config.pgpool_conf)
    status_file = config.status_file or settings.status_file
    absent = "" if os.path.isfile(main_file) else " (absent: defaults)"
    lines = [f"# main file: {main_file}{absent}"]
    lines += [f"# read: {source}" for source in config.sources]
    for key in Config._fields:
        value = getattr(config, key)
        if key == "primary_node_id" and value is None:
            value = "auto"  # what the file says; None is only how the code holds it
        if key != "sources":
            lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")
    lines.append(
        f"# pgpool.conf: {settings.path}" + ("" if settings.found else " (not found: defaults)")
    )
    lines.append(
        f"# pgpool_status: {status_file}"
        + (" (status_file)" if config.status_file else " (work_dir/logdir)")
        + ("" if os.path.exists(status_file) else " (absent now)")
    )
    lines.append(
        f"# pgpool port: {settings.port}, pid file: {settings.pid_file}, "
        f"backends: {settings.num_backends}"
    )
    lines += [f"# pgpool.conf note: {note}" for note in settings.notes]
    lines.append(f"# lock file: {config.lock_path}")
    if not config.addresses:
        lines.append("# no addresses configured: add/del/clean change nothing")
    return "\n".join(lines) + "\n"
