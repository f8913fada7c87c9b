//! `rfs build`: the Dockerfile builder (issue 16).
//!
//! So far: the syntax ([`parse`]) and variable expansion ([`expand`]); evaluation and the step runner
//! come next.

pub mod expand;
pub mod parse;
