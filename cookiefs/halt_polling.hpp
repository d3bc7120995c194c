// Whether this machine is a KVM guest whose idle vCPUs halt without polling.
//
// Each FUSE round trip wakes a mount thread and then the caller; on such a
// guest, waking a halted vCPU is a VM exit, about half of a request's cost on
// our test VM. The cpuidle-haltpoll governor polls up to guest_halt_poll_ns
// before halting (its default 200,000 ns); a kernel command line can set it
// to 0. A node setting the mount never changes: it only says so (docs/deploy.md).
#pragma once

#include <filesystem>

namespace cookiefs {

// True when `sysfs` (normally /sys) shows the haltpoll cpuidle governor in
// use with guest_halt_poll_ns 0; false otherwise, or when either is unreadable.
bool idle_vcpus_halt_without_polling(const std::filesystem::path& sysfs = "/sys");

}  // namespace cookiefs
