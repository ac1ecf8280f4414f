from django.conf import settings
from django.contrib import auth, messages
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from hcapadmin.accounts.forms import LocalLoginForm
from hcapadmin.audit.models import record


def _safe_next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/"
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return "/"


@never_cache
@require_http_methods(["GET", "POST"])
def login(request):
    form = LocalLoginForm(request.POST or None) if settings.LOCAL_ACCOUNTS else None
    status = 200
    if request.method == "POST" and form is not None:
        if form.is_valid():
            username = form.cleaned_data["username"]
            user = auth.authenticate(request, username=username, password=form.cleaned_data["password"])
            if user is not None:
                auth.login(request, user)
                record("login.success", request=request, actor=username, target=username,
                       details={"method": "local"})
                return HttpResponseRedirect(_safe_next(request))
            locked = getattr(request, "axes_locked_out", False)
            record("login.lockout" if locked else "login.failure", request=request, actor=username or "anonymous",
                   target=username, outcome="denied" if locked else "failure", details={"method": "local"})
            if locked:
                form.add_error(None, "Too many failed attempts. Login is locked for a while; try again later.")
                status = 429
            else:
                form.add_error(None, "Wrong username or password.")
                status = 401
        else:
            status = 400
    return render(request, "accounts/login.html",
                  {"form": form, "title": "Log in", "next": _safe_next(request)}, status=status)


@require_POST
def logout(request):
    principal = getattr(request, "principal", None)
    if principal is not None:
        record("logout", request=request, target=principal.name)
    auth.logout(request)
    messages.info(request, "You are logged out.")
    return HttpResponseRedirect("/login/")
