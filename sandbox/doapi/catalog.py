"""The local DigitalOcean API's catalog: the regions, sizes and images a create is validated against.

Layer: sandbox. The data (`REGIONS`, `SIZES`, `IMAGES`), their objects in the shapes of the official OpenAPI
description, `find_image` (by id or slug), and the read-only endpoints `/v2/regions`, `/v2/sizes` and
`/v2/images` (`CatalogApi`).
"""

from __future__ import annotations

from sandbox.doapi.wire import ApiRequest, ApiResponse, Json, not_found, page

REGIONS = {
    "nyc1": "New York 1", "nyc3": "New York 3", "sfo3": "San Francisco 3", "ams3": "Amsterdam 3",
    "fra1": "Frankfurt 1", "lon1": "London 1", "sgp1": "Singapore 1", "tor1": "Toronto 1",
    "blr1": "Bangalore 1", "syd1": "Sydney 1",
}
DEFAULT_REGION = "nyc3"
REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]
# slug: (memory MiB, vcpus, disk GiB, transfer TiB, price monthly USD, description)
SIZES: dict[str, tuple[int, int, int, float, float, str]] = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0, "Basic"),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0, "Basic"),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0, "Basic"),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0, "Basic"),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0, "Basic"),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0, "Basic"),
    "g-2vcpu-8gb": (8192, 2, 25, 4.0, 63.0, "General Purpose"),
}
# id: (slug or None, name, distribution, type, public)
IMAGES: dict[int, tuple[str | None, str, str, str, bool]] = {
    150000001: ("debian-12-x64", "12 x64", "Debian", "base", True),
    150000002: ("ubuntu-22-04-x64", "22.04 (LTS) x64", "Ubuntu", "base", True),
    150000003: ("ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu", "base", True),
    150000100: (None, "redwarden-node-snapshot", "Debian", "snapshot", False),
}
CATALOG_CREATED_AT = "2024-01-01T00:00:00Z"


def region_object(slug: str) -> Json:
    return {"name": REGIONS.get(slug, slug), "slug": slug, "features": list(REGION_FEATURES), "available": True,
            "sizes": list(SIZES)}


def size_object(slug: str) -> Json:
    memory, vcpus, disk, transfer, monthly, description = SIZES[slug]
    return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": transfer,
            "price_monthly": monthly, "price_hourly": round(monthly / 672, 5), "regions": list(REGIONS),
            "available": True, "description": description,
            "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}]}


def image_object(image_id: int) -> Json:
    slug, name, distribution, kind, public = IMAGES[image_id]
    return {"id": image_id, "name": name, "type": kind, "distribution": distribution, "slug": slug,
            "public": public, "regions": list(REGIONS), "created_at": CATALOG_CREATED_AT, "min_disk_size": 10,
            "size_gigabytes": 2.36, "description": f"{distribution} {name}", "tags": [], "status": "available",
            "error_message": ""}


def find_image(ref: str | int) -> int | None:
    """The catalog id of an image given by id or slug."""
    if isinstance(ref, int):
        return ref if ref in IMAGES else None
    if ref.isdigit() and int(ref) in IMAGES:
        return int(ref)
    return next((i for i, spec in IMAGES.items() if spec[0] == ref), None)


class CatalogApi:
    """`/v2/regions`, `/v2/sizes`, `/v2/images`: the catalog, read-only, paginated under `base_url`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def list_regions(self, req: ApiRequest) -> ApiResponse:
        return page(req, "regions", [region_object(slug) for slug in REGIONS], self.base_url)

    def list_sizes(self, req: ApiRequest) -> ApiResponse:
        return page(req, "sizes", [size_object(slug) for slug in SIZES], self.base_url)

    def list_images(self, req: ApiRequest) -> ApiResponse:
        kind, private = req.query.get("type"), req.query.get("private")
        items = []
        for image_id, (_, _, _, image_type, public) in IMAGES.items():
            if kind == "distribution" and image_type != "base":
                continue
            if kind == "application":
                continue
            if private == "true" and public:
                continue
            items.append(image_object(image_id))
        return page(req, "images", items, self.base_url)

    def get_image(self, req: ApiRequest, image: str) -> ApiResponse:
        image_id = find_image(image)
        if image_id is None:
            raise not_found()
        return ApiResponse(200, {"image": image_object(image_id)})
