//! Data plane: worker threads pinned one per core, each a monoio runtime owning its listeners,
//! client connections, upstream keep-alive pool and counters.
