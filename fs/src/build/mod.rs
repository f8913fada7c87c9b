//! `rfs build`: the Dockerfile builder (issue 16).
//!
//! So far: the syntax ([`parse`]), variable expansion ([`expand`]) and ARG/ENV scopes ([`vars`]);
//! evaluation and the step runner come next.

pub mod expand;
pub mod parse;
pub mod vars;
