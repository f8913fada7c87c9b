//! Turns `RFS_LOG` (e.g. `RFS_LOG=debug`, `RFS_LOG=rfs_fs=trace`) into the log filter.

/// Starts logging to stderr at the level `RFS_LOG` names (warnings by default; fuser's
/// "not implemented" notices for requests rfs leaves to the kernel, such as FLUSH, only with
/// an explicit `RFS_LOG`).
pub(crate) fn init() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("RFS_LOG", "warn,fuser=error"))
        .format_timestamp_millis()
        .init();
}
