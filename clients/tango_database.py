"""Writes a deployment to a Tango database: reads what is there, writes only the differences."""

from __future__ import annotations

import tango

from photonflow.deployment import Change, DatabaseView, Deployment, plan_changes

# DbServerInfo.mode as Astor writes it: 1 = controlled by the Starter of that host
STARTER_CONTROLLED = 1


def read_view(database: tango.Database, deployment: Deployment) -> DatabaseView:
    view = DatabaseView()
    for server in deployment.servers:
        for device in server.devices:
            try:
                info = database.get_device_info(device.name)
            except tango.DevFailed:
                continue  # not defined yet
            view.device_servers[device.name.lower()] = (info.ds_full_name, info.class_name)
            stored = database.get_device_property(device.name, list(device.properties))
            view.properties[device.name.lower()] = {
                name: list(values) for name, values in stored.items() if len(values)
            }
            if device.alias:
                try:
                    view.aliases[device.name.lower()] = database.get_alias_from_device(device.name)
                except tango.DevFailed:
                    pass  # no alias yet
    for tango_class, properties in deployment.class_properties.items():
        stored = database.get_class_property(tango_class, list(properties))
        view.class_properties[tango_class] = {name: list(values) for name, values in stored.items() if len(values)}
    for entry in deployment.starter:
        stored = server_info(database, entry.server)
        if stored is not None:
            view.server_info[entry.server.lower()] = stored
    return view


def server_info(database: tango.Database, server: str) -> tuple[str, int] | None:
    """(host, level) of a server a Starter controls, or None. DbGetServerInfo's raw answer: pytango's
    get_server_info fails on a server never given one (mode ' ')."""
    _, host, mode, level = (list(database.command_inout("DbGetServerInfo", server)) + ["", "", "", ""])[:4]
    if not host.strip() or mode.strip() != str(STARTER_CONTROLLED) or not level.strip().lstrip("-").isdigit():
        return None
    return host.strip(), int(level)


def apply_deployment(database: tango.Database, deployment: Deployment, dry_run: bool = False) -> list[Change]:
    """Bring the database to the deployment; returns the changes made (or that would be)."""
    changes = plan_changes(deployment, read_view(database, deployment))
    if dry_run:
        return changes
    levels = {entry.server: entry for entry in deployment.starter}
    for change in changes:
        if change.kind == "add_device":
            info = tango.DbDevInfo()
            info.name, info._class, info.server = change.device, change.tango_class, change.server
            database.add_device(info)
        elif change.kind == "put_alias":
            if change.old:
                database.delete_device_alias(change.old[0])
            database.put_device_alias(change.device, change.new[0])
        elif change.kind == "put_class_property":
            database.put_class_property(change.device, {change.property_name: change.new})
        elif change.kind == "put_server_info":
            put_server_info(database, change.server, levels[change.server].host, levels[change.server].level)
        else:
            database.put_device_property(change.device, {change.property_name: change.new})
    return changes


def put_server_info(database: tango.Database, server: str, host: str, level: int) -> None:
    """What Astor writes when a server is given a host and a start-up level (DbPutServerInfo)."""
    info = tango.DbServerInfo()
    info.name, info.host, info.mode, info.level = server, host, STARTER_CONTROLLED, level
    database.put_server_info(info)
