//! Directory protocol: descriptors, publication, consensus fetches.
//!
//! Not implemented yet: oxit does not publish a descriptor or read a
//! consensus. Until it does, exits behind unknown relays need
//! `RefuseUnknownExits 0` (see the README).
