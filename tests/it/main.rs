//! hookd's integration tests: one binary, a module per feature. Every test talks to a real
//! hookd (in-process on port 0, or the built binary) and real receivers on loopback.

mod support;

mod admin;
mod audit;
mod breaker;
mod cli;
mod clock_jumps;
mod conformance;
mod crash;
mod cross_site;
mod damaged_store;
mod delivery_controls;
mod fairness;
mod faults;
mod first_run;
mod fuzz;
mod guard;
mod ingest;
mod isolation;
mod keepalive;
mod limits;
mod listen;
mod observability;
mod overload;
mod postgres;
mod readme;
mod receiving_docs;
mod recipes;
mod restart;
mod retention;
mod retries;
mod seed_receivers;
mod standard_webhooks;
mod subscriptions_api;
mod systemd;
mod tenancy;
mod tokens;
mod traces;
mod transfer;
mod ui;
mod upgrade;
mod verify;
