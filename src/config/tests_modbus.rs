//! Tests of the Modbus source config and profiles.
