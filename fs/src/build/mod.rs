//! `rfs build`: the Dockerfile builder (issue 16).
//!
//! So far: the syntax ([`parse`]), variable expansion ([`expand`]), ARG/ENV scopes ([`vars`]),
//! stages ([`stages`]), `.dockerignore` ([`ignore`]) and the config effects of metadata
//! instructions ([`config`]); the step runner (RUN/COPY layers, history, cache) comes next.

pub mod config;
pub mod expand;
pub mod ignore;
pub mod parse;
pub mod stages;
pub mod vars;
