//! The in-pod reporter against fake cgroup trees and a live API.
