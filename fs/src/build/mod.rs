//! `rfs build`: the Dockerfile builder (issue 16).
//!
//! So far: the syntax ([`parse`]), variable expansion ([`expand`]), ARG/ENV scopes ([`vars`]),
//! stages ([`stages`]), `.dockerignore` ([`ignore`]), the config effects of metadata
//! instructions ([`config`]), `COPY`/`ADD` into an upper directory ([`copy`]), what a `RUN`
//! may leave under a `VOLUME` ([`volume`]) and layer tars replayed through the engine for
//! `--squash` ([`squash`]). The step
//! runner that needs processes and FUSE (a `RUN` in the sandbox, steps committed as layers,
//! the cache) is `rfs build` in the mount helper.

pub mod config;
pub mod copy;
pub mod expand;
pub mod ignore;
pub mod parse;
pub mod squash;
pub mod stages;
pub mod vars;
pub mod volume;
