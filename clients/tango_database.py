"""Writes a deployment to a Tango database: reads what is there, writes only the differences."""

from __future__ import annotations

import tango

from photonflow.deployment import Change, DatabaseView, Deployment, plan_changes


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
    return view


def apply_deployment(database: tango.Database, deployment: Deployment, dry_run: bool = False) -> list[Change]:
    """Bring the database to the deployment; returns the changes made (or that would be)."""
    changes = plan_changes(deployment, read_view(database, deployment))
    if dry_run:
        return changes
    for change in changes:
        if change.kind == "add_device":
            info = tango.DbDevInfo()
            info.name, info._class, info.server = change.device, change.tango_class, change.server
            database.add_device(info)
        else:
            database.put_device_property(change.device, {change.property_name: change.new})
    return changes
