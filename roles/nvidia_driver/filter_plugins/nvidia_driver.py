"""nvidia_driver's pure logic: which packages make up a branch, and whether what apt installed is that branch.

Kept out of Jinja so unit tests call it directly (tests/unit/test_nvidia_driver_filters.py) on recorded
real data (tests/fixtures/ubuntu-jammy: Ubuntu's transitional nvidia-driver-570-open and friends).
"""

from __future__ import annotations

import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # the unit tests run without Ansible's error classes too
    AnsibleFilterError = ValueError

# Packages that make up a driver install: the ones the role holds, and walks when it looks for a culprit.
# (The container toolkit's nvidia-container-*/libnvidia-container* are not the driver's: its role holds them.)
DRIVER_PACKAGE = re.compile(r"^(?!(lib)?nvidia-container)(nvidia|libnvidia|linux-modules-nvidia|xserver-xorg-video-nvidia)[-a-z0-9.+]*$")


def variant(flavour, server=False, kernel_modules="dkms"):
    """The scheme key for a flavour: open, proprietary, open-server, open-signed, open-server-signed..."""
    return flavour + ("-server" if server else "") + ("-signed" if kernel_modules == "signed" else "")


def driver_packages(schemes, source, branch, flavour="open", server=False, kernel_modules="dkms", kernel=""):
    """The packages to install for a branch, from nvidia_driver_package_schemes (data, not code).

    schemes: {source: [{from: <lowest branch>, <variant>: [names with {branch} and {kernel}]}, ...]};
    the entry with the highest `from` not above the branch applies (NVIDIA renamed its packages at 590).
    """
    try:
        number = int(str(branch))
    except ValueError:
        return []  # validate.yml refuses the branch itself, with the fix

    if source not in (schemes or {}):
        return []  # the argument spec refuses an unknown nvidia_driver_source, with its choices
    entries = [e for e in schemes[source] if int(e.get("from", 0)) <= number]
    if not entries:
        raise AnsibleFilterError("nvidia_driver_package_schemes has no entry for nvidia_driver_source %r at branch %s:"
                                 " use cuda_repo or distro, or add an entry" % (source, branch))
    entry = max(entries, key=lambda e: int(e.get("from", 0)))
    key = variant(flavour, server, kernel_modules)
    if key not in entry:
        offered = sorted(k for k in entry if k != "from")
        raise AnsibleFilterError(
            "no %s packages for branch %s from %s (nvidia_driver_package_schemes offers %s there): %s"
            % (key, branch, source, ", ".join(offered),
               "the -server and signed variants are Ubuntu's builds (nvidia_driver_source: distro)"
               if source != "distro" and key != flavour else "choose another variant or add one"))
    return [name.replace("{branch}", str(number)).replace("{kernel}", kernel) for name in entry[key]]


def with_version(packages, version, unversioned=r"^$"):
    """name=version for the packages that carry the driver's version; the others (a pinning package,
    Canonical's kernel-versioned modules) as they are. No version: the names as they are."""
    if not version:
        return list(packages)
    return [p if re.match(unversioned, p) else "%s=%s" % (p, version) for p in packages]


def branch_of(version):
    """580 for 580.178.04-0ubuntu0.22.04.1; None for a version that is not a driver's (e.g. 5.15.0-204.214)."""
    match = re.match(r"^(?:\d+:)?(\d{3})\.\d+", version or "")
    return match.group(1) if match else None


def package_branch(name, version):
    """A package's driver branch: from its version, or for NVIDIA's branch lock from its name."""
    match = re.match(r"^nvidia-driver-pinning-(\d{3})$", name)
    return match.group(1) if match else branch_of(version)


def parse_dpkg(text):
    """dpkg-query -W -f '${db:Status-Want} ${db:Status-Status} ${Package} ${Version} ${Depends}\\n' output."""
    packages = {}
    for line in (text or "").splitlines():
        parts = line.split(" ", 4)
        if len(parts) < 4:
            continue
        want, status, name, version = parts[:4]
        depends = parts[4] if len(parts) > 4 else ""
        names = [re.split(r"[\s(:]", alt.strip(), maxsplit=1)[0]
                 for group in depends.split(",") for alt in group.split("|") if alt.strip()]
        packages[name] = {"want": want, "status": status, "version": version, "depends": names}
    return packages


def driver_state(dpkg_text, smi_owner, branch, requested, source="cuda_repo"):
    """Whether the installed driver is the requested branch, and what to hold.

    smi_owner: `dpkg-query -S /usr/bin/nvidia-smi` output (which package brought nvidia-smi, on
    every scheme). Returns {ok, version, package, message, hold, unhold}.
    """
    branch = str(branch)
    packages = parse_dpkg(dpkg_text)
    installed = {n: p for n, p in packages.items() if p["status"] == "installed"}
    owner = (smi_owner or "").split(":", 1)[0].strip()
    version = installed.get(owner, {}).get("version", "")
    found = branch_of(version)
    result = {"ok": found == branch, "package": owner, "version": version, "branch": found, "message": ""}
    if not result["ok"]:
        result["message"] = mismatch_message(installed, owner, version, branch, requested, source)
    ours = sorted(n for n, p in installed.items()
                  if DRIVER_PACKAGE.match(n) and (package_branch(n, p["version"]) == branch or n in requested))
    result["hold"] = [n for n in ours if installed[n]["want"] != "hold"]
    # Installed driver packages of another branch: removed in the same apt transaction that installs
    # this one (apt's resolver gives up on the versioned names' Conflicts/Provides otherwise).
    result["other"] = sorted(n for n, p in installed.items()
                             if DRIVER_PACKAGE.match(n) and package_branch(n, p["version"]) not in (None, branch)
                             and n not in requested)
    result["unhold"] = sorted(n for n, p in packages.items() if p["want"] == "hold" and DRIVER_PACKAGE.match(n)
                              and n not in ours and package_branch(n, p["version"]) not in (None, branch))
    return result


def culprit(installed, requested, branch):
    """The first requested package (or a dependency of one) that pulls a driver package of another branch."""
    seen, queue = set(), list(requested)
    while queue:
        name = queue.pop(0)
        if name in seen or name not in installed:
            continue
        seen.add(name)
        for dep in installed[name]["depends"]:
            if dep not in installed or not DRIVER_PACKAGE.match(dep):
                continue
            dep_branch = branch_of(installed[dep]["version"])
            if dep_branch and dep_branch != branch:
                return name, dep
            queue.append(dep)
    return None


def mismatch_message(installed, owner, version, branch, requested, source):
    if not owner or not version:
        return ("no installed package provides /usr/bin/nvidia-smi after installing %s: the driver is not installed"
                % ", ".join(requested))
    text = ("asked for driver branch %s (%s), but the installed driver is %s (%s %s)"
            % (branch, ", ".join(requested), version.split("-")[0], owner, version))
    found = culprit(installed, requested, branch)
    if found:
        name, dep = found
        text += (": %s %s depends on %s %s, which pulled branch %s in"
                 % (name, installed[name]["version"], dep, installed[dep]["version"], branch_of(installed[dep]["version"])))
    if source == "distro":
        return text + (". Ubuntu moves old branches to newer ones with transitional packages: choose branch %s"
                       % branch_of(version))
    return text + (". Pin NVIDIA's repository above the distribution's (nvidia_driver_cuda_repo_pin_priority, 600"
                   " like cuda-keyring's pin) or choose branch %s" % branch_of(version))


class FilterModule:
    def filters(self):
        return {
            "nvidia_driver_packages": driver_packages,
            "nvidia_driver_state": driver_state,
            "nvidia_driver_branch_of": branch_of,
            "nvidia_driver_with_version": with_version,
        }
