from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "hcapadmin.accounts"
    label = "accounts"
