"""Built-in layer families. Importing this package registers them, exactly as a plugin would."""

from gradcheck.layers import dense  # noqa: F401
from gradcheck.layers import conv  # noqa: F401
from gradcheck.layers import pooling  # noqa: F401
from gradcheck.layers import activations  # noqa: F401
from gradcheck.layers import shape  # noqa: F401
from gradcheck.layers import dropout  # noqa: F401
from gradcheck.layers import norm  # noqa: F401
from gradcheck.layers import losses  # noqa: F401
from gradcheck.layers import external  # noqa: F401
from gradcheck.layers import merge  # noqa: F401
from gradcheck.layers import upsample  # noqa: F401
from gradcheck.layers import recurrent  # noqa: F401
from gradcheck.layers import embedding  # noqa: F401
from gradcheck.layers import attention  # noqa: F401
from gradcheck.layers import function  # noqa: F401
from gradcheck.layers import foreign  # noqa: F401
