//! Opening a plugin library: abi_stable's checks, extended so that plugin-api can evolve in
//! both directions within a minor release.
//!
//! abi_stable checks a library's root module against the loader's: the 0.x minor must
//! match, and every type reachable from [`PluginMod`](crate::PluginMod) must have the same layout, except
//! that prefix types (the module itself and every `#[sabi_trait]` vtable) may have MORE
//! fields in the library than in the loader. So a plugin built against a later patch
//! release, with fields appended after a `#[sabi(last_prefix_field)]`, loads in an older
//! host. The converse, an older plugin in a host whose plugin-api appended a field, is
//! refused by abi_stable although it is safe: a prefix value records how many fields it
//! has, its accessors for appended fields answer `None` (or fall back to a trait method's
//! default) when the value lacks them, and every other type is checked equal either way.
//! [`root_module`] accepts that case too, by checking the layouts with the roles swapped.

use std::path::Path;

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError};
use abi_stable::StableAbi;

use crate::plugin::PluginModRef;

/// Opens the plugin library at `path` (it stays loaded) and returns its checked root module.
pub fn open(path: &Path) -> Result<PluginModRef, LibraryError> {
    root_module(lib_header_from_path(path)?)
}

/// The root module of a loaded library, if it is compatible: built against this release or
/// a later patch release of the same minor (abi_stable's check), or against an earlier
/// patch release whose types this release only extended by appending prefix fields.
pub fn root_module(header: &'static LibHeader) -> Result<PluginModRef, LibraryError> {
    match header.init_root_module::<PluginModRef>() {
        Err(LibraryError::AbiInstability(refused)) => {
            let older = header
                .layout()
                .is_some_and(|plugin| check_layout_compatibility(plugin, <PluginModRef as StableAbi>::LAYOUT).is_ok());
            if !older {
                return Err(LibraryError::AbiInstability(refused));
            }
            // SAFETY: the library's root module layout was just checked as the interface
            // and ours as the implementation: every type reachable from `PluginMod` has the
            // same layout in both, except prefix types, which have a prefix of our fields.
            // Prefix types are only read through accessors that check the field count the
            // value itself records, so reading a field this library lacks yields `None` (or
            // a trait method's default) instead of reading past the value. The version
            // number is still checked by `init_root_module_with_unchecked_layout`.
            unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }
        }
        other => other,
    }
}
