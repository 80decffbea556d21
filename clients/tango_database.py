"""Writes a deployment to a Tango database: reads what is there, writes only the differences."""

from __future__ import annotations

import tango

from photonflow.deployment import Change, DatabaseView, Deployment, plan_changes

# DbServerInfo.mode as Astor writes it: 1 = controlled by the Starter of that host
STARTER_CONTROLLED = 1


def read_view(database: tango.Database, deployment: Deployment, prune: bool = False) -> DatabaseView:
    """What the database holds for the deployment's devices; with ``prune``, also every device
    of its servers and every property of its devices and classes, to find what it no longer has."""
    view = DatabaseView()
    for server in deployment.servers:
        if prune:
            view.server_devices[server.name.lower()] = server_devices(database, server.name)
        for device in server.devices:
            try:
                info = database.get_device_info(device.name)
            except tango.DevFailed:
                continue  # not defined yet
            key = device.name.lower()
            view.device_servers[key] = (info.ds_full_name, info.class_name)
            names = list(device.properties)
            if prune:
                view.property_names[key] = list(database.get_device_property_list(device.name, "*"))
                names = sorted(set(names) | set(view.property_names[key]))
            view.properties[key] = non_empty(database.get_device_property(device.name, names))
            if device.attribute_properties:
                stored = database.get_device_attribute_property(device.name, list(device.attribute_properties))
                view.attribute_properties[key] = {attribute: non_empty(properties)
                                                  for attribute, properties in stored.items()}
            if device.alias:
                try:
                    view.aliases[key] = database.get_alias_from_device(device.name)
                except tango.DevFailed:
                    pass  # no alias yet
    for tango_class, properties in deployment.class_properties.items():
        names = list(properties)
        if prune:
            view.class_property_names[tango_class] = list(database.get_class_property_list(tango_class))
            names = sorted(set(names) | set(view.class_property_names[tango_class]))
        view.class_properties[tango_class] = non_empty(database.get_class_property(tango_class, names))
    for entry in deployment.starter:
        stored = server_info(database, entry.server)
        if stored is not None:
            view.server_info[entry.server.lower()] = stored
    return view


def non_empty(stored) -> dict[str, list[str]]:
    """The properties the database has (it answers an unknown name with an empty value)."""
    return {name: list(values) for name, values in stored.items() if len(values)}


def server_devices(database: tango.Database, server: str) -> list[tuple[str, str]]:
    """(device, class) of every device a server runs, but its admin device."""
    devices = []
    for tango_class in database.get_server_class_list(server):
        devices += [(name, tango_class) for name in database.get_device_name(server, tango_class)]
    return devices


def server_info(database: tango.Database, server: str) -> tuple[str, int] | None:
    """(host, level) of a server a Starter controls, or None. DbGetServerInfo's raw answer: pytango's
    get_server_info fails on a server never given one (mode ' ')."""
    _, host, mode, level = (list(database.command_inout("DbGetServerInfo", server)) + ["", "", "", ""])[:4]
    if not host.strip() or mode.strip() != str(STARTER_CONTROLLED) or not level.strip().lstrip("-").isdigit():
        return None
    return host.strip(), int(level)


def apply_deployment(database: tango.Database, deployment: Deployment, dry_run: bool = False,
                     prune: bool = False) -> list[Change]:
    """Bring the database to the deployment; returns the changes made (or that would be).
    ``prune``: also delete what the deployment no longer has (see ``plan_changes``)."""
    changes = plan_changes(deployment, read_view(database, deployment, prune), prune)
    if dry_run:
        return changes
    levels = {entry.server: entry for entry in deployment.starter}
    for change in changes:
        write_change(database, change, levels)
    return changes


def write_change(database: tango.Database, change: Change, levels: dict) -> None:
    kind = change.kind
    if kind == "add_device":
        info = tango.DbDevInfo()
        info.name, info._class, info.server = change.device, change.tango_class, change.server
        database.add_device(info)
    elif kind == "delete_device":
        database.delete_device(change.device)
    elif kind == "put_alias":
        if change.old:
            database.delete_device_alias(change.old[0])
        database.put_device_alias(change.device, change.new[0])
    elif kind == "put_class_property":
        database.put_class_property(change.device, {change.property_name: change.new})
    elif kind == "delete_class_property":
        database.delete_class_property(change.device, [change.property_name])
    elif kind == "put_attribute_property":
        database.put_device_attribute_property(change.device, {change.attribute: {change.property_name: change.new}})
    elif kind == "delete_attribute_property":
        database.delete_device_attribute_property(change.device, {change.attribute: [change.property_name]})
    elif kind == "put_server_info":
        put_server_info(database, change.server, levels[change.server].host, levels[change.server].level)
    elif kind == "delete_property":
        database.delete_device_property(change.device, [change.property_name])
    else:
        database.put_device_property(change.device, {change.property_name: change.new})


def put_server_info(database: tango.Database, server: str, host: str, level: int) -> None:
    """What Astor writes when a server is given a host and a start-up level (DbPutServerInfo)."""
    info = tango.DbServerInfo()
    info.name, info.host, info.mode, info.level = server, host, STARTER_CONTROLLED, level
    database.put_server_info(info)
