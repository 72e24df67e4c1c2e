//! What an isolated plugin's child may do: limits set between `fork` and `exec`, and a seccomp filter the
//! child installs on itself once the plugin is loaded and initialised.
//!
//! - `RLIMIT_AS` (the memory limit), `RLIMIT_CORE` 0, `RLIMIT_NOFILE` 16; killed with the parent
//!   (`PR_SET_PDEATHSIG`); a network namespace of its own where the kernel allows it (as root).
//! - `PR_SET_NO_NEW_PRIVS`, then a BPF allow-list: reading and writing the descriptors it already has,
//!   memory, futexes, clocks, signals and exiting. Every other system call fails with `EPERM`: the
//!   child cannot open a file or a device, create a socket (so no network, whatever the namespace), fork
//!   or exec. A filter for another architecture than the one built for kills the process.

use std::io;

/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

// Classic BPF opcodes (linux/filter.h): BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "arm")]
const AUDIT_ARCH: u32 = 0x4000_0028;

/// The system calls an isolated plugin's child needs after loading: I/O on its socket and stderr,
/// memory, threads' futexes, time, signals (a panic's abort raises one) and exit.
fn allowed() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_close,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_sched_yield,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_tgkill,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigaction,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_ppoll,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_mmap, libc::SYS_poll]);
    #[cfg(target_arch = "aarch64")]
    calls.extend([libc::SYS_mmap]);
    // 32-bit ARM: mmap2, sigreturn, and the 64-bit-time calls of glibc with 64-bit time_t
    // (clock_gettime64 403, clock_nanosleep_time64 407, ppoll_time64 414, futex_time64 422).
    #[cfg(target_arch = "arm")]
    calls.extend([libc::SYS_mmap2, libc::SYS_sigreturn, 403, 407, 414, 422]);
    calls
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter program.
fn program() -> Vec<libc::sock_filter> {
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, ARCH_OFFSET),
        jump(AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, NR_OFFSET),
    ];
    for nr in allowed() {
        prog.push(jump(u32::try_from(nr).unwrap_or(u32::MAX), 0, 1));
        prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    }
    prog.push(stmt(
        BPF_RET_K,
        libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & 0xffff),
    ));
    prog
}

/// Installs the filter on the calling process (all its threads). Irreversible.
pub fn restrict_self() -> io::Result<()> {
    let prog = program();
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).unwrap_or(u16::MAX),
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls with valid arguments; `fprog` points at `prog`, alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(
            libc::SYS_seccomp,
            1, /* SECCOMP_SET_MODE_FILTER */
            1, /* SECCOMP_FILTER_FLAG_TSYNC */
            &fprog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Between `fork` and `exec` of the child: moves the socket and the plugin's memory file to
/// descriptors 3 and 4, sets the limits, asks to die with the parent and, where permitted, leaves the
/// network namespace. Only async-signal-safe system calls.
pub fn before_exec(socket: i32, library: i32, memory_limit: u64) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // SAFETY: system calls on descriptors we own in the forked child, with valid arguments.
    unsafe {
        let socket = check(libc::fcntl(socket, libc::F_DUPFD, 10))?;
        let library = check(libc::fcntl(library, libc::F_DUPFD, 10))?;
        check(libc::dup2(socket, super::CHILD_SOCKET_FD))?;
        check(libc::dup2(library, super::CHILD_LIBRARY_FD))?;
        let limit = |resource, value: u64| {
            let rlim = libc::rlimit {
                rlim_cur: value as libc::rlim_t,
                rlim_max: value as libc::rlim_t,
            };
            check(libc::setrlimit(resource, &rlim))
        };
        limit(libc::RLIMIT_AS, memory_limit)?;
        limit(libc::RLIMIT_CORE, 0)?;
        limit(libc::RLIMIT_NOFILE, 16)?;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        // Best effort: only root may; the seccomp filter refuses sockets either way.
        let _ = libc::unshare(libc::CLONE_NEWNET);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_checks_the_architecture_then_allows_the_list_and_refuses_the_rest() {
        let prog = program();
        assert_eq!(prog.len(), 4 + 2 * allowed().len() + 1);
        assert_eq!(prog[1].k, AUDIT_ARCH);
        assert_eq!(prog[2].k, libc::SECCOMP_RET_KILL_PROCESS);
        let last = prog.last().unwrap();
        assert_eq!(last.k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert!(!allowed().contains(&libc::SYS_socket));
        assert!(!allowed().contains(&libc::SYS_openat));
    }
}
