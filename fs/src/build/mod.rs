//! `rfs build`: the Dockerfile builder (issue 16).
//!
//! So far: the syntax ([`parse`]), variable expansion ([`expand`]), ARG/ENV scopes ([`vars`]) and
//! stages ([`stages`]); evaluation and the step runner come next.

pub mod expand;
pub mod parse;
pub mod stages;
pub mod vars;
