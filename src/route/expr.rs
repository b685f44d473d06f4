//! vulcand's route expression language (`Host`, `Path`, `PathRegexp`, `PathPrefix`, `Method`,
//! `Header`, ... joined by `&&`) parsed once into typed matchers.
