"""reimage: change the OS of whole fleets of Huawei Cloud ECS servers, safely."""

__version__ = "0.1.0"
