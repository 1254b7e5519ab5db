"""Start as root (what SageMaker expects of a container), serve as an unprivileged user.

AWS's hosting page: "SageMaker AI expects all containers to run with root users". Root is
what lets `serve` read whatever SageMaker extracted into /opt/ml/model, whoever owns it and
whatever the mode (a tarball made on a laptop can carry root-owned 0600 files). Once the model
is copied into the server's private working directory, owned by the serving user, the whole
process drops to that user, as nginx does: the model check, MMS's Java frontend and its Python
workers, all started afterwards, never run as root.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def serving_user(name: str) -> pwd.struct_passwd | None:
    """The account to drop to; None when not root, when asked not to, or when it is absent
    (`dogbreed serve` as root outside the image: say so and go on)."""
    if os.geteuid() != 0 or name in ("", "root"):
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        log.info("running as root: there is no user %r to drop to (DOGBREED_SERVE_USER)", name)
        return None


def drop_privileges(user: pwd.struct_passwd, model_dir: Path, workdir: Path) -> Path:
    """Give `user` the working directory with a readable copy of the model, then become it.
    Returns where the model is now."""
    if not model_dir.resolve().is_relative_to(workdir.resolve()):
        copy = workdir / "model"
        shutil.copytree(model_dir, copy, symlinks=False, dirs_exist_ok=True)
        model_dir = copy
    for path in [workdir, *workdir.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)  # last: after it, nothing above is allowed any more
    os.environ["HOME"] = user.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user.pw_name
    log.info("serving as %s (uid %d); model copied to %s", user.pw_name, user.pw_uid, model_dir)
    return model_dir
