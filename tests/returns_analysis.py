"""Which top-level keys can a module return? Read from its code, not from a run.

Starts at every `exit_json(...)` / `fail_json(...)` call of the module and follows what flows
into it: keyword names, dict literals, `dict(...)`, a variable's subscript assignments
(`result["k"] = ...`, also inside tuple targets), `.update(...)` and `.setdefault(...)`, calls
of functions and methods defined in the module or imported from module_utils (their `return`
values, with the call's arguments bound to the parameters; `a, b = f()` takes the matching
element), and a nested function's free variables to the enclosing function (a closure). Anything else raises Unresolvable naming the line, so a new construct makes the test
fail loudly rather than pass with keys it never saw.
"""

import ast
import os

# Ansible's common return values: documented by Ansible, not by each module.
COMMON_RETURN_KEYS = frozenset({"changed", "failed", "msg", "skipped", "invocation", "warnings", "deprecations"})
_MAX_DEPTH = 12


class Unresolvable(Exception):
    pass


class _Source:
    def __init__(self, path):
        self.path = path
        with open(path) as handle:
            self.tree = ast.parse(handle.read(), path)
        self.defs = {}
        self.imports = {}  # local name -> (module_utils file name, name there)
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                self.defs[node.name] = node
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ansible.module_utils."):
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module.rsplit(".", 1)[1], alias.name)


class _Scope:
    """A function body being read, with its parameters bound to the caller's expressions."""

    def __init__(self, source, func, bindings=None, depth=0, enclosing=None):
        self.source, self.func, self.bindings, self.depth = source, func, bindings or {}, depth
        self.enclosing = enclosing  # the scope of the function this one is nested in, if any

    def where(self, node):
        return "%s:%s" % (os.path.basename(self.source.path), getattr(node, "lineno", "?"))


class _Analysis:
    def __init__(self, module_utils_dir):
        self.module_utils_dir = module_utils_dir
        self.sources = {}

    def source(self, path):
        if path not in self.sources:
            self.sources[path] = _Source(path)
        return self.sources[path]

    # -- what a name refers to -------------------------------------------------------------
    def lookup(self, scope, name, node):
        """-> (source, FunctionDef or ClassDef) for a module-level name, following module_utils imports."""
        src = scope.source
        if name in src.defs:
            return src, src.defs[name]
        if name in src.imports:
            util, real = src.imports[name]
            path = os.path.join(self.module_utils_dir, util + ".py")
            if os.path.exists(path):
                other = self.source(path)
                if real in other.defs:
                    return other, other.defs[real]
        raise Unresolvable("%s: cannot follow %s() (not defined in the module or in module_utils)" % (scope.where(node), name))

    # -- keys of an expression -------------------------------------------------------------
    def keys(self, expr, scope, index=None):
        if scope.depth > _MAX_DEPTH:
            raise Unresolvable("%s: call chain too deep" % scope.where(expr))
        if index is not None:
            if isinstance(expr, ast.Tuple):
                return self.keys(expr.elts[index], scope)
            if isinstance(expr, ast.Call):
                return self.call_keys(expr, scope, index)
            raise Unresolvable("%s: cannot take element %d of %s" % (scope.where(expr), index, ast.dump(expr)[:80]))
        if isinstance(expr, ast.Dict):
            out = set()
            for key, value in zip(expr.keys, expr.values):
                if key is None:
                    out |= self.keys(value, scope)
                elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                    out.add(key.value)
                else:
                    raise Unresolvable("%s: a dict key that is not a string literal" % scope.where(key))
            return out
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "dict":
            out = set()
            for arg in expr.args:
                out |= self.keys(arg, scope)
            return out | self.keyword_keys(expr.keywords, scope)
        if isinstance(expr, ast.Name):
            return self.variable_keys(expr.id, scope, expr)
        if isinstance(expr, ast.Call):
            return self.call_keys(expr, scope, None)
        raise Unresolvable("%s: cannot tell which keys %s holds" % (scope.where(expr), ast.dump(expr)[:80]))

    def keyword_keys(self, keywords, scope):
        out = set()
        for kw in keywords:
            out |= {kw.arg} if kw.arg else self.keys(kw.value, scope)
        return out

    def variable_keys(self, name, scope, node):
        if name in scope.bindings:
            out = set()
            for expr, caller in scope.bindings[name]:
                out |= self.keys(expr, caller)
            return out
        out, found = set(), False
        for stmt in ast.walk(scope.func) if scope.func is not None else ():
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    elts = target.elts if isinstance(target, ast.Tuple) else [target]
                    for i, elt in enumerate(elts):
                        if isinstance(elt, ast.Name) and elt.id == name:
                            found = True
                            out |= self.keys(stmt.value, scope, i if isinstance(target, ast.Tuple) else None)
                        elif isinstance(elt, ast.Subscript) and isinstance(elt.value, ast.Name) and elt.value.id == name:
                            found = True
                            if not (isinstance(elt.slice, ast.Constant) and isinstance(elt.slice.value, str)):
                                raise Unresolvable("%s: %s[...] with a key that is not a string literal" % (scope.where(elt), name))
                            out.add(elt.slice.value)
            elif (isinstance(stmt, ast.Call) and isinstance(stmt.func, ast.Attribute)
                  and isinstance(stmt.func.value, ast.Name) and stmt.func.value.id == name):
                if stmt.func.attr == "update":
                    for arg in stmt.args:
                        out |= self.keys(arg, scope)
                    out |= self.keyword_keys(stmt.keywords, scope)
                elif stmt.func.attr == "setdefault":
                    first = stmt.args[0] if stmt.args else None
                    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                        raise Unresolvable("%s: %s.setdefault with a key that is not a string literal" % (scope.where(stmt), name))
                    out.add(first.value)
        if not found and scope.enclosing is not None and not _is_local(scope.func, name):
            # A free variable of a nested function is the enclosing function's (Python's closure rule).
            return self.variable_keys(name, scope.enclosing, node)
        if not found:
            raise Unresolvable("%s: cannot find where %s is built" % (scope.where(node), name))
        return out

    def call_keys(self, call, scope, index):
        func = call.func
        if isinstance(func, ast.Name):
            src, target = self.lookup(scope, func.id, call)
            if isinstance(target, ast.ClassDef):
                raise Unresolvable("%s: %s(...) builds an object, not a dict" % (scope.where(call), func.id))
            return self.returns_keys(src, target, call, scope, index, skip_self=False)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            klass = self.class_of(func.value.id, scope, call)
            src, cls = klass
            for node in cls.body:
                if isinstance(node, ast.FunctionDef) and node.name == func.attr:
                    return self.returns_keys(src, node, call, scope, index, skip_self=True)
            raise Unresolvable("%s: class %s has no method %s" % (scope.where(call), cls.name, func.attr))
        raise Unresolvable("%s: cannot follow the call %s" % (scope.where(call), ast.dump(func)[:80]))

    def class_of(self, name, scope, node):
        for stmt in ast.walk(scope.func) if scope.func is not None else ():
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id == name and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name)):
                src, target = self.lookup(scope, stmt.value.func.id, stmt)
                if isinstance(target, ast.ClassDef):
                    return src, target
        raise Unresolvable("%s: cannot tell the class of %s" % (scope.where(node), name))

    def returns_keys(self, src, func, call, caller, index, skip_self):
        params = [a.arg for a in func.args.posonlyargs + func.args.args]
        if skip_self:
            params = params[1:]
        bindings = {}
        for param, arg in zip(params, call.args):
            bindings.setdefault(param, []).append((arg, caller))
        for kw in call.keywords:
            if kw.arg:
                bindings.setdefault(kw.arg, []).append((kw.value, caller))
        inner = _Scope(src, func, bindings, caller.depth + 1)
        out, seen = set(), False
        for node in _own_nodes(func):
            if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
                seen = True
                out |= self.keys(node.value, inner, index)
        if not seen:
            raise Unresolvable("%s: %s() returns nothing" % (caller.where(call), func.name))
        return out


def _is_none(node):
    return isinstance(node, ast.Constant) and node.value is None


def _is_local(func, name):
    """Is `name` a parameter of func, or bound in its own body (so not a free variable)?"""
    args = func.args
    params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    params += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    if name in params:
        return True
    for node in _own_nodes(func):
        if isinstance(node, (ast.Global, ast.Nonlocal)) and name in node.names:
            return isinstance(node, ast.Global)
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, (ast.Store, ast.Del)):
            return True
    return False


def _scopes(src):
    """Every function of the module with its scope; a nested function's scope knows its enclosing one."""
    out = []

    def visit(node, enclosing):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = _Scope(src, child, enclosing=enclosing)
                out.append(scope)
                visit(child, scope)
            elif isinstance(child, (ast.ClassDef, ast.Lambda)):
                visit(child, None)  # a class body is no enclosing scope for its methods
            else:
                visit(child, enclosing)

    visit(src.tree, None)
    return out


def _own_nodes(func):
    """The nodes of a function body, without those of nested functions and classes."""
    stack = list(func.body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.append(child)


def result_keys(module_path, module_utils_dir):
    """Every top-level key the module can pass to exit_json or fail_json."""
    analysis = _Analysis(module_utils_dir)
    src = analysis.source(module_path)
    out, calls = set(), 0
    for scope in _scopes(src):
        for node in _own_nodes(scope.func):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("exit_json", "fail_json"):
                calls += 1
                if node.args:
                    raise Unresolvable("%s: %s with positional arguments" % (scope.where(node), node.func.attr))
                out |= analysis.keyword_keys(node.keywords, scope)
    if not calls:
        raise Unresolvable("%s: no exit_json/fail_json call found" % module_path)
    return out
