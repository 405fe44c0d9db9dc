pub mod app;
pub mod chaos;
pub mod db;
pub mod emulated;
pub mod google;
pub mod graph_api;
pub mod mocks;
