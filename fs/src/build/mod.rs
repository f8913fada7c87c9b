//! `rfs build`: the Dockerfile builder (issue 16).
//!
//! So far: variable expansion ([`expand`]); parsing, evaluation and the step runner come next.

pub mod expand;
