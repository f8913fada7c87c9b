//! `rfs build`: the Dockerfile builder (issue 16).
//!
//! So far: the syntax ([`parse`]), variable expansion ([`expand`]), ARG/ENV scopes ([`vars`]),
//! stages ([`stages`]) and `.dockerignore` ([`ignore`]); evaluation and the step runner come next.

pub mod expand;
pub mod ignore;
pub mod parse;
pub mod stages;
pub mod vars;
