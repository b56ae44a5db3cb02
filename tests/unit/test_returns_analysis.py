"""The RETURN-coverage reader on small modules: it finds keys however they flow in, and says so
when it cannot follow them (never a silent pass)."""

import textwrap

import pytest

from returns_analysis import Unresolvable, result_keys

UTILS = '''
def parsed(body):
    return {"completion": body, "finish_reason": None}

def judge(parsed, latency):
    out = dict(parsed)
    out["latency_seconds"] = latency
    return out

class State:
    def result(self):
        return {"completion": "", "chunks": 0}
'''


def _module(tmp_path, body):
    (tmp_path / "module_utils").mkdir()
    (tmp_path / "module_utils" / "util_x.py").write_text(UTILS)
    path = tmp_path / "mod.py"
    path.write_text("from ansible.module_utils.util_x import parsed, judge, State\n" + textwrap.dedent(body))
    return result_keys(str(path), str(tmp_path / "module_utils"))


def test_follows_subscripts_update_calls_params_and_methods(tmp_path):
    keys = _module(tmp_path, '''
        def complete(stream):
            if stream:
                state = State()
                return judge(state.result(), 1.0), 0.1
            return judge(parsed("x"), 1.0), None

        def main(module):
            result = dict(changed=False, url="u")
            result["a"], result["b"] = 1, 2
            answer, ttft = complete(True)
            result.update(answer)
            result.setdefault("c", 3)
            if ttft:
                module.fail_json(msg="no", rc=2, **result)
            module.exit_json(extra=1, **result)
        ''')
    assert keys == {"changed", "url", "a", "b", "c", "completion", "finish_reason", "chunks", "latency_seconds",
                    "msg", "rc", "extra"}


@pytest.mark.parametrize("body,why", [
    ("def main(m):\n    r = build()\n    m.exit_json(**r)\n", "cannot follow build()"),
    ("def main(m):\n    r = {}\n    r[name()] = 1\n    m.exit_json(**r)\n", "not a string literal"),
    ("def main(m, r):\n    m.exit_json(**r.copy())\n", "cannot tell the class of r"),
    ("def main(m):\n    m.exit_json(**other)\n", "cannot find where other is built"),
])
def test_what_it_cannot_follow_is_an_error(tmp_path, body, why):
    with pytest.raises(Unresolvable, match=why):
        _module(tmp_path, body)


def test_follows_a_closure_to_the_enclosing_function(tmp_path):
    keys = _module(tmp_path, '''
        def main(module):
            result = dict(changed=False)
            result["gpus"] = []

            def run(args):
                if args:
                    module.fail_json(msg="hung", **result)
                return 0

            run(["-q"])
            module.exit_json(**result)
        ''')
    assert keys == {"changed", "gpus", "msg"}


@pytest.mark.parametrize("body", [
    # a parameter of the nested function is not the enclosing function's variable
    "def main(m):\n    r = dict(a=1)\n    def f(r):\n        m.fail_json(**r)\n    f(1)\n",
    # neither is one assigned in the nested function from something it cannot follow
    "def main(m):\n    r = dict(a=1)\n    def f():\n        r = build()\n        m.fail_json(**r)\n    f()\n",
])
def test_a_closure_does_not_hide_a_local_name(tmp_path, body):
    with pytest.raises(Unresolvable):
        _module(tmp_path, body)
