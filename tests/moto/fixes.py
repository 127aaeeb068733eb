"""Fixes to moto's EC2 emulation where it differs from real EC2 in ways vpcrouter's tests see.

Run by the Makefile after installing moto into the venv (idempotent; fails loudly when a fix
no longer applies, so a moto upgrade that changed the code is noticed):

1. CreateRoute with DestinationPrefixListId and a NetworkInterfaceId target stored a route
   without destination (moto looked the list up only for non-ENI targets).
2. ModifyManagedPrefixList ignored CurrentVersion; real EC2 answers PrefixListVersionMismatch.
3. ModifyManagedPrefixList without PrefixListName erased the list's name; real EC2 keeps it.
"""
import pathlib
import sys

import moto.ec2.models as models

MARK = "# vpcrouter test fix"
root = pathlib.Path(models.__file__).parent


def patch(path, old, new):
    text = path.read_text()
    if MARK in text and new in text:
        return
    if old not in text:
        sys.exit(f"moto fix no longer applies to {path}: {old.splitlines()[0]!r} not found")
    path.write_text(text.replace(old, new, 1))


patch(
    root / "route_tables.py",
    """        if interface_id:
            # for validating interface Id whether it is valid or not.
            interface = self.get_network_interface(interface_id)  # type: ignore[attr-defined]
""",
    f"""        if destination_prefix_list_id is not None:  {MARK}
            destination_prefix_list = self.managed_prefix_lists.get(  # type: ignore[attr-defined]
                destination_prefix_list_id
            )
        if interface_id:
            # for validating interface Id whether it is valid or not.
            interface = self.get_network_interface(interface_id)  # type: ignore[attr-defined]
""",
)
patch(
    root / "managed_prefixes.py",
    """        managed_pl: ManagedPrefixList = self.managed_prefix_lists.get(prefix_list_id)  # type: ignore
        managed_pl.prefix_list_name = prefix_list_name
""",
    f"""        managed_pl: ManagedPrefixList = self.managed_prefix_lists.get(prefix_list_id)  # type: ignore
        if prefix_list_name is not None:  {MARK}
            managed_pl.prefix_list_name = prefix_list_name
        if current_version is not None and str(current_version) != str(managed_pl.version):
            from ..exceptions import EC2ClientError

            raise EC2ClientError(
                "PrefixListVersionMismatch", "The prefix list has the incorrect version number."
            )
""",
)
print("moto: vpcrouter's test fixes are in place")
