"""The lab project's URLs: the admin only, where chunkwise's pages are tested."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
