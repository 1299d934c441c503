//! Routing: which route takes a request. Patterns are parsed and the router is
//! compiled once per snapshot; a lookup runs once per request.

pub mod conditions;
pub mod normalize;
pub mod pattern;
pub mod router;

pub use conditions::{Conditions, ValueTest};
pub use pattern::{Captures, HostPattern, PathPattern};
pub use router::{Lookup, RouteInput, RouteMatch, RouteSpec, Router};
