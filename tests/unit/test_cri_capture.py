"""tracer.cri.wire on bytes recorded from containerd 1.6.20 (grpc-go).

Recorded once on the test machine through a unix-socket relay that logs
every recv() (tests/unit/test_cri_grpcio.py's Relay), against the test
bed's containerd:

* ``CRI``: a Python grpcio client calling the CRI v1 RuntimeService and
  ImageService on containerd, whose grpc-go server encodes the responses
  (Version, Status, ListPodSandbox, ListContainers, a failing
  ContainerStatus, ImageStatus, ListPodSandbox again);
* ``CTR``: ``ctr -n k8s.io containers ls -q``, a grpc-go 1.33 client
  calling containerd's own API (a method the CRI decoder does not know).

Only read-only calls; the bytes hold the test bed's container ids and
labels, nothing secret. Each entry of ``*_READS`` is one recv: ("c", n) for
n bytes from the client, ("s", n) from the server.
"""

from __future__ import annotations

import base64
import zlib

import pytest

from tracer.cri.wire import Chunk, CriCall, CriDecoder, DecoderConfig, Direction

CRI_READS = [('s', 15), ('c', 82), ('s', 9), ('c', 9), ('c', 302), ('s', 135), ('c', 47), ('s', 17), ('c', 117),
 ('s', 104), ('c', 30), ('c', 106), ('s', 1522), ('c', 30), ('c', 106), ('s', 30), ('s', 2972), ('c', 30),
 ('c', 173), ('s', 30), ('s', 109), ('c', 17), ('c', 115), ('s', 66), ('c', 17), ('c', 58), ('s', 1522),
 ('c', 30), ('c', 17), ('s', 17)]
CRI_BYTES = (
    "eNrtWF1oHMcd35N0lrWyUnM4X3ZDz7ZibCV7NzM7MzujYHKoxY5FXGTLFPpUZudDOizdHXd7jl1o/SBQbVpoaEsJ6UNfAmkIFNcm"
    "fXQs+TM1IcX0qX4tlIY+pTSlL0ln92710ejjYimKaCOk1c7szH/m/5vff/4fjrOjx0l+so5TcsZOn8gP5V86c2asiApgwB1wx0/G"
    "T8cZbA/rSp7dybPHzognxs8d8fRP4v6M/bCzNfjFuOH0ZFqthZePM7GwTCk7XBPR5IFivVmJytO6cA4WTrdex3X9XFnq4nd0vVGu"
    "VkrusGhGk9V6ObrweDRdexYdm6hKEf+vo0KjKs/OzJZ2yWol0pXIiy7U9G5Rq02VpYjs7OJEvSZLXZHeGdVFecqKLO2Juzwhpa5F"
    "nq7IqipXJp4sKzvdLvF8XmkzJSL9fH7i++VaaVcyOt5XtRl1kfGS22zouicm7HCQfKtdsLurFGGBkYKfT7pkkbACKID84alypXn+"
    "hbycjKIaOpKik2lhvit5SYDpdbOgAAtgEb9kxGJjl+Ps3NE6hZ7du/se6+11nMdaWF763o+faf4xHDh09OWTWjnOYSddwznYFptz"
    "Y4BEuaLraq8LC7SAwA9VAx7oOgcd56lMNjmTS6//4d7VHP7zTzOgdNm+v/PsSC+86MQrZ5avvLivgwv7eqH8aubU/PzbC8MXO76V"
    "bLS7fej71zj08UhEzcatmdmb83PLsc8SAMH0jXTt7hZA2UTP7pRkK2OXXQG7rtaWLlmBzy3S+pA76O52d7U3dVoLdWF3Ju75to5e"
    "qdbPtnvi6TFk3e9eXxOcQ47Dk3WybdWPrKH6y+VGNFZV46Kiwur5OzOzt2/dfHcuFZddqm/2UfXNWn2z7zgLAq+4f+tyS5pyaQKu"
    "kDJMaKixBiGAhIFQUY4gVQG2RgECwbQJuY+5HxqpDJWIMmUMyPlu9hUdejQ3GPhhqAlmnjQceNgQ7AnCfC9QXGJjMCFa7+2ZqgqV"
    "v/frB9d+++obHz81dNR9vFwtnG2Gul7RkW4UalVVaJZVZ+KGDrr7Pju9IqZ1oyakziWrDX3DfWLlQbnW1tEBd9+Sr+Vq0VqMKU/Y"
    "G6ZZt1K6Ra2MjrpPrzxG60oujwCiHoQe4mcgHUZgGPvWzBgC5DkAhgFIsJbQcB0ESOnAQBMSAo0wAQG+kJBgAhHgUAsfEyAEA35A"
    "OKFW75Dp0P4xlWId5AaVhgYQFnicU+ph6iMv9AX2uKFCYc5VIMI21u/99dO3W1ivg0OwxmF0sl5Hh/HFYU0gWIa1z4yE1BjJQkMM"
    "VooKKjAUyoIcBApy6gfKQCQF5UBpDgOrGjcB8rVhOMWaxbrzEGkmPSgo9HCIQ6s20Z6ilGptjxMZ0Mb6X3+6fq0jrNmaWK+/3peM"
    "dcCW8hoFRPBQhcL4iFk6hAwqRiziJDSG2H6uCAspAhgQ5UvpY21PhmIlAkElgCnWPDdoZyBNwsCTMkQexoHvCYqYF4QSQxgYgLFq"
    "Y/3aRx++tt4d0om4TblD+BeHNceshXXqebJre57sldTz9Hboeb6ZxgeNuzOzd27fujGfiutd6nl6H9Xz9FrP0/8DJxXYf959mHVL"
    "wLccAFAaxZAPDJFIGGKV9QXQ0IdG2/vdEoQrFVqOYKEV1MZwDu3lr6xh5zbsu/ZmXXsstQMn3OONSYEIHZYaMBBwa2JcqsBanoWf"
    "I6BMwEIulLGMlkRJQDGQhmpKQ6WJkAHAvsHWWQ1tliCQYVf//ulHV2J+j6znv0YOul9fPmAh4msNi7Uc2ZinHenESkYPr76RSdGY"
    "zO3UghClAR/13MOfFRfp+nS5kgTvx+tW6piul6sql0Gjx9zCaoKXTDqpGw0bnY9Zzuf2FJU+V1zy0ZuqTowyF3wOOVWbSlzI9Ryz"
    "ycPoEXdwtZl13YhE3ZqRNa1cBiTs1pL4hIeBwgxze+YUYYOAvXyEvYkgUtbWFbaXOaPWy0NhKDPGxzGZIRNUy9yGo4Xtze6ffHD/"
    "Hy12b5C8nUQmHZF3PTMLvmL3ArutixcAct8GV9xnPvIJMRZpzTHXPg+h5QNlIdASYcW5T1mgAiNsIACZDKjycxuOGbY3ux/+6hf/"
    "3BR2dxLAbAq7+ZaQZ9ubUMJugQKgsFE26pBGcwu/sVxUnFEFfaWlvbNDJgW2EQkiGPuAMx5Qe0ljhhQNYG7D2cf2Zvf1u3f+8rvN"
    "ubvXz3Q2hd3sf4mjj26paQbRu3YG0X/ecYaTyL2vnUEMrZFBLGQPrfrdvZnZu3duz91M5fW1UoPjSQoRN5wRt2Q2+LNqEnJ8hSRE"
    "JTr3Xbpx0cmQi87DZ0afuP+18Ef7vavz9968fP/05WsPLg//7PW39uz/8KX3T02N//uX39Wf6/eTypFTD9548/dvvbgCqjgBsr8N"
    "5OBSIE9M2/NJYWw1Egjfm5m9d/fO/K1Usf6WlvkEwrjh7HOfdp+cqkoxNVltRMVKtaLP20ROV6JhuBSO/Ko5Wf+l+bSW2N8e3OJG"
    "/9yNFbToSyYNzP331gaWJogDj5ogDtjNtEuTA4ulyS+7rLCex9yKusMWlBW+KgOnZeCNlXg7OaptUQbegirvuqXm/5cy8BZUedct"
    "NW9BGTh1HgMrOo9lpcm2C/hN3/Wfm6Ps9MLwtOM/kpmkkA=="
)

CTR_READS = [('c', 33), ('s', 24), ('c', 142), ('s', 32768), ('s', 12795), ('c', 17), ('c', 56), ('s', 17), ('c', 28),
 ('s', 9), ('c', 13), ('c', 13)]
CTR_BYTES = (
    "eNrtnWtsHMd9wI+OrAdjGQJTu3UaI/El7QdHy519ze5sIICUREtMJIomGauFa1xm50FtdLw97+6RkgWiQA0/ggAN0qBFEKBA8ilo"
    "PwSw2gZBm6L9ULSug7oBGhRF635LgSYN0MJoEKBokc7s3mP5Oi65S+pIrSzzdnZnZ/7/efz/Mz+O/je/MPuxZz92dWlpXtUnwdnx"
    "s+OL1+XPWq12opb+Odm9eLRWm5KfJ8a6D3oXrTGZY+zV12e++bk3/uDj1sz9me+/+Kmvvnbxhxdmn/pD5c3Gd25+95XfMZZePPfX"
    "0TOf+gq+cmP69a//8OkP/f6Zxhef7nzfO/urF65dZ/SVL37tnbf/+G8+98n77/zk51OPxOz1669aj7710anffubHV//u+eaXP//G"
    "7PO/9nbjtR+//4vaz6U8sv6+MKe7F1LO0yeTq0dOnDt35vFTp2q1x1MR39xQYe3J/02yySKe/Nn4fyvjU8DQIAQa4dTRDcAtomNu"
    "IdMxMGCaoXFmMYZtjCj1CNBMzKjGOEdIMzmnGuQTHx9/0g8mSegrJGjF2G+xkE7e9lt04kz/xsSF8SdEptsdj4UtFrNosh3QyY5P"
    "Jz5hG57HLNNRCEdAMbllKthyDMWmiIgqTEvUL+r45a2vt/AKi9qYsIkTzQDTiY8mgmyTaeLRNeYpUJTykY0Z+vKl2T6A2+0Pf6gZ"
    "ENy8FUSx6nWiu15wx9XqtxPxM/qFnRaZXNUnFsY/vOWuNnmjHftBK5ow9cfVThSqkee3VPnQraurOFSbvqfGoZA8VIQYsceoGsU4"
    "ZkmeZ7/w9DiM77az8tFJP1CDNmv170Qyb+yvMCVqM6Jq6qL4mHj3I/fqAfFfEM+FAHW3rk2CSV2hbLV+vt4OA8KiqO7eq3ciFiaf"
    "Pq274Hx9ufuJKfWl6Lh5xaci54vgpXVxN1yW1/WoyVhbFGRAAOovna+z1qq8PT+9dPVComfSdIm2bibdTw4eJBdpUvwQRV69sbg0"
    "N3195kLSU7JwsiZEqqviGcFt7PlNIRhLhPeCTov6rWVZ96Xp+calqzduzol88vry9KXGjRdmFhZmL890bz23OLM0e7mXEFlnFrqJ"
    "65+Zu9F7MDez1FiYvtlNiVeu9N8Ric9mE8+Jz0FqfpCSZVycnbssbi+8MHupJ8Diry8KGRdu3Fjq3vjM7LVr3cvpz16eXWrcXJhd"
    "mklalHNGYn+VHUPd2ixc8eOY0WOnm5giQbCySIKQTdPP110NACDuhUEQy/HaxvEtMZRlkkd18WBFDOBYzqh7dSqmv9/CcTpbVTlF"
    "RQ1y9otkNxUFnZBk0kFqXWQztoJITuHz4oLdYSS5kJNdiLSl7NQIdIuOV9pClkzZvRvbFR7FoU+EfRLWpi6lp+yCbVnygf8KuwAt"
    "y4C3d6pSbcfRoFpxI0336+3fGa4VW/NbwkS2iJSgHa/cSaQAEMKeRADqoJ5YsgvWjsKsvNxhHTaQp5/uy9O/s89Wju5m1BWJja3c"
    "u5GjcDl+dqpB5ZFKlsOg0x7U1U/3K+vfyVcba/Z6eIeKWUxU6RelrxzUK+w3zda6k4OTw1/d6ESXw3biLsXaQY1wiwpfyyKVQUS4"
    "jahOuYOZxkwGPKBZDvAoRLoGqW1SxoGNHcY9ZJjI8DihHBIdOpRzkJUxo3nYFTRsh/6q8LXycm2ontGoKxkV0TBkUdBclZLyUdZz"
    "o5j70lZO/OjWyt61TNdkh6JmKl8O9YQjxa1WEONuznv1TUva0B+IqyTTwK2Lda14f1jGnhHp3dg2u7+Cl1mvzO2Wydu91G0kRa4w"
    "60XbaWgNXcHSFeRuGZONQ6IGpkMzJ0vkep5dinTtTb/VuSN7RY5bObySLhIj0E8uhcfHzWawVnc5bkZM9CVJl+Sic1fqsnNX2EoQ"
    "3hUvicJIuyPfjm7hUL6sr8t7iVGP5tM1hSqFFtucSPXEmBWrxyCMVZHOI65adOcnnUevJVPdeusW0WRyHnaTflv6me4qKFniqDq0"
    "bUNtRap8lsnaSWza9lnls0zWZBGVvSG6bi0Ib+/4vnietjCObjMqGzCZaGkuHMlNhXi3myRtv5+4LRd2gxRLPHyaEC5T7MnuNqSl"
    "GNyVbjRsNP0o3nRrY7aI3GK0QZnXWc7ci5KKEyfvhytrOK1aprujSF31w7gj9lXtYI2FYnMkF9chwzRoNe9uUktMzX7RfHDphy8P"
    "asyoI67DlxWx2lteFibgpfV1/UywysImvssjtzApuPjY6X/5xlv/dPLcv37j6+9+4NMbUgs/emz8E1sxwmCDvsJiTHGMJ/7ysXG4"
    "7Me3Op54uqIOMqvSJLdvLwuzLfpr8EC93nv1tcfu1Qdb41Vpr3rP5DwTewW3XsKkmOsb3UZiixrSxjTyTMmGNHCLqeFJpCnBXl4S"
    "ntNflvqtZHTNOAZhVBLDnviS9EKaHN2CLmHAATbSqY4ItT3TAw5COqDcdjyEKaeWRyxKADQB4ZBB6FFmYWID0+CmUFaWLTppRWi0"
    "HT9oYo81t/NhG7DMDv6rB3d2tPgbENFOlr6LofZg4Yd7377kt3AkbRDDlkUZQFtdTD+nsO0xDuNLiT0TA3BI1lhuodOFzXXhNkRf"
    "9fyAXONknirNYHlv5QRNnwi3U3/Ob7JtWynzzhW5TJpnoR/IhtMTvxcsN7pmV3SWCiZTAbZ3h8KvNfpOLdk7NyJpYxs4s3uOGOmE"
    "fny3IcVmd+LeqE26s9FfKd1LvI2rrfcMeyLGMbTsm/UqZtqT9hVTs520YBhw0e2N1JFq6+tyoTErTcEC4yVag/P1a8Fyb8TusOZO"
    "FjOJwUxtZ66VTHbILcZBe9FfbuGmqEWk51PqeU3aGnlnfb32xIt9CP7EC+P/8Oz4lG5bGHnUw9zQHUxNz9GoY5lUqMS5Je4jajke"
    "1IEJLGoQYpiMCD9hUuEKoPADQ/i2KEFnlmcrhHi6Ypq2oWCoO4rtEVPTbA5Mk5bCt9HEMzuS+FPd1WyWbrdxJ2KuMYkOl27/+VP7"
    "ptu/9VQRup0B2anupSLsilhXxPpIEetWMMfW5kN/VVj+ZTlM47DDNoHsnSn2wC+lL4qMfeyWLshQvQLdDw50b+BdW9pgC23aGQsn"
    "VWq2bedsheNA2A8BGBZdcAwBhsEDRr6FVdsd+QZ7BqG94ZJKuTuoLKrE0BrEQlWhfij8ZoL6cq6FUSPPUjIvIUVlE9JcwpVBSPdP"
    "RfOIqJbQ87mp6CbyuTe6uU8bJApqRSpp+QpGzGYmNhVkYUPxTGQrhqVpikOFtyGeaQEKhxDT7EZ60yb7kPbVm7fSg332IRHRomPl"
    "4ge7DPSr//gXcR+I/t9Pfu+tsYXvnh2vb93NdefcAIf+7tlxMw8O7b44gKHv5YChJcyFuYzJSUFonlnY2JVc9mzYHoxPZmL2zNr2"
    "y1YJsw7QPu+EPTcRTVSUaOa1yJvcaKYssS0nSSdMRozJYaIDHSrCROhoSYOuDlzTmNSBg0znkwC4QPba9q/3VhdYGI2sE0gNd6Mt"
    "ZnBCP4uY7vp+oOFuGGyOxXOL84dqcs/XZ+cl3ACTjjNp25Ma0MW96f7RvNl5oUKr02yery+klOSqmNxNyTwk8Lo0N7vAok4zUX5W"
    "NEPIcdfLsvgWSO7Op3Mr9U/b1XZFaLSG7254kPiC65jIocVcYLrUdInhAu6aaPB7i0N0TXKm7qSObk8C8Z+2QZfEoSbPXXfzk75u"
    "yUDO/n1AuqUVbO6vtN9TSXXmQuzqlouZa0AXWxsklWWsyh63IaXCRA8pyGOupbsad23LdRxXh5sKEiVdnluUrSsaULbUQtCJWbeQ"
    "9W0Z69aDxsJ7YKAhgxMHGY6hG5bFEbUZMhEzkKcJMwIdDzCimxQhAzo2tTkWPkZziFDBGA3GmucMca4j0dVB4wd/0BhV2LbCttVB"
    "44q/VgeNH8KDxoVB5VE4aFyKkkfgoPEhUOdROGh8gL83OFYHjQ+U3x8LjF7OQeNcSL3ozq/QQWMIUd6Dxt2s+z5o3H2/OmhcEKsX"
    "HS/9g8avfftbfz84aJykRuagcQmTYtNB473y9exB4xLs5UNy0PhBYfnqoHF10Lg6aHxQB43z/fJurweNn/yfAQT/6fj7yvgU1m1A"
    "TU6BZhLOkKiPC7tKkQOpZlBGHGh5DsEmo5pumaYBkINsyDVuOjqF9rCDxpQhT2cOUTQMNcUUzaYgbjFF/lqBMVu0JgelQHCnguDH"
    "CYI7FQSvIHgFwSsIXkHwhxCCE81wuNjKcbEP9bjFxZYPYohNDVOkMdumGoKGTbmmEwwREIsMzUYQIm7rBuOOeSQgeClKHgEIXljP"
    "owHBC6v5kEDwou2UF4I7ZUPwPFuZEYLgecRVi+78ikXbcOzc0TbSrPuPtpG+X0HwghC86Hi5+MHT7yXY+71vfbnx6WxiZBB4CVNi"
    "EwJ3UgSeZ0JuQeAlWMuHBIE7RRF4XvteIfAKgVcI/JAQuNPIt47ZY6yN3xjE2rg5/oNnx6eK2tnRQOBVrI0q1kbFqytePRKxNpwq"
    "1kYVa6OKtXH4uDA4/sD34GNtHCim3F+sjXxr4ePPRw+YiZbQ80ck1oanA2QgTVcQspFiIt1TNItgxSOiARxDt2xYxdoYykOLjpX+"
    "oeCffecrXxrrHwr+q/98999HI9hGCZMhE2xjryR012AbTj/YRk7TmCPYhrPvYBu5DXTOYBsPCmnuI9iG7VgHHGwjZ9OOerCNXDZ3"
    "a7ANeKjBNuDuwTaw7jLiYuialqsbrsNKDkiRzzcdzWAbeXUrK9iGAYmtIYsMKQhjV0OiF12gu7bpcl482MZ2kJUj4TN0ymyucc+y"
    "NI65bQEDE80yLU00i8awYVoAYwcYtoUsaHLLc5gn/nfoUMiqcWA5tmhSCBUTGrriGTKcCYeYmghRG3ulQFa7gqwVZK0gawVZRwOy"
    "2hVkrSBrBVl3JJHFFhwjDVkLqjYakLWYEgcAWe1GnqVkXshqlw9Zcwj3oCHr7iKqJfT8EYGsDDgG4A5VLAdhxda5IX84CqFIc7CJ"
    "PVPXKsg6HLIWGyt9yPq33/vBGwPI+kc/ff/fRgWyFp4MGchq9yDr7tMwH2S1M5A1l2nMAVntfUPW3AY6J2S1i0PWfCa5OGS1NHDg"
    "kDVX0446ZM1lc7dCVutQIau1O2TVscs810IuJ64J3eTXKWWCyHy+6WhC1ry6lQVZTcP0OCDDIKvoQouL913CXFsUhA4Cshb9ds4h"
    "kDXP196VAllhBVkryFpB1gqyjgZkhRVkrSBrBVl3IJFFFxwjDFkLqzYKkLWEr2svG7Lm+wblvJAVlg1Z837r+gOErLm+gbqEnj8q"
    "J1kZkAQNKdSClmJhxBUDAUdBgECx/XMY1GgFWYdB1qJjpQ9Z3371m5mTrN/70f3/Gg3IWsJkyEBWmELWPNMwH2SFfcia0zTmgKxw"
    "35A1t4HOCVlhUcia1yQXh6w6OOiTrDmbduRPsuaxuVshq3OokNXZHbJC7BLbxdh1LJdrLjDKPu2Zyzcd0ZOsOXUrC7JCymxgmsMg"
    "q8Zcm7sQya8AtEw3+QbG0r82jhHLsJBnU9MxkeMhqJtcBxjqmHi6plNhWqjJbN2BFrI0zKHDuWFK76M5GDIyGidZq4i5xyhirl1x"
    "24rbVhFzKwBbRcx9KCPmFjwOejQi5pag5JGImHvgZ3tHI2LugZ3OPmYRcw/wlPSxOKxcVsTcHAeXi+78ikXMNc3cEXPTrPuPmJu+"
    "X0XMLcrVC46XPld/59v/8e7ga+OS1MjEzC1hUmyKmbvXQ8wbY+YWtpcPSczcB3X2uYqZW8XMrWLmHlTM3Hz/QmKvMXNrvzT2qITg"
    "U29+7Z2370+Y//ylMTD1BXH9J79y8ZT2m+LR6ZOSkNceOXHu3JnHT52q1U6crqV/JEA/fbK2w9NLz2cSU78wrCDvz2q1kyfS6xO1"
    "Me9P5edYN326C+kvLWYS0/f/H8BxVxw="
)


def chunks(reads: list[tuple[str, int]], blob: tuple[str, ...], side: str, key: str = "cap") -> list[Chunk]:
    data = zlib.decompress(base64.b64decode("".join(blob)))
    out, pos = [], 0
    for i, (who, n) in enumerate(reads):
        direction = Direction.CLIENT_TO_SERVER if who == "c" else Direction.SERVER_TO_CLIENT
        out.append(Chunk(key, side, direction, 1000 * (i + 1), data[pos:pos + n]))
        pos += n
    assert pos == len(data)
    return out


def decode(chunk_list: list[Chunk]) -> tuple[list[CriCall], CriDecoder]:
    decoder = CriDecoder(DecoderConfig(decode_polling_calls=True))  # this checks every message's decoding
    calls: list[CriCall] = []
    for c in chunk_list:
        calls += decoder.feed(c)
    calls += decoder.close_connection(chunk_list[0].connection, 10**9)
    return calls, decoder


@pytest.mark.parametrize("side", ["client", "server"])
def test_containerd_cri_responses(side: str) -> None:
    calls, decoder = decode(chunks(CRI_READS, CRI_BYTES, side))
    assert [c.method for c in calls] == [
        "Version", "Status", "ListPodSandbox", "ListContainers", "ContainerStatus", "ImageStatus", "ListPodSandbox"]
    assert all(c.method_resolution == "decoded" and c.incomplete_reason is None for c in calls)
    assert [c.grpc_status for c in calls] == [0, 0, 0, 0, 5, 0, 0]
    assert calls[0].response["runtime_name"] == "containerd"
    assert calls[0].request == {"version": "0.1.0"}
    assert "not found" in calls[4].grpc_message and calls[4].response is None
    assert len(calls[2].response["items"]) == 4 and len(calls[3].response["containers"]) == 4
    ids = [sorted(i["id"] for i in calls[k].response["items"]) for k in (2, 6)]
    assert ids[0] == ids[1]  # the same sandboxes, in containerd's (map) order
    state = decoder.stats
    assert state.errors == {} and state.dropped_bytes == 0


def test_containerd_cri_every_attach_point_is_never_wrong() -> None:
    full, _ = decode(chunks(CRI_READS, CRI_BYTES, "client"))
    truth = {c.stream_id: c for c in full}
    all_chunks = chunks(CRI_READS, CRI_BYTES, "client")
    for start in range(1, len(all_chunks)):
        calls, decoder = decode(all_chunks[start:])
        assert decoder.stats.errors.get("internal_error", 0) == 0
        for call in calls:
            if call.method_resolution != "unresolved":
                assert call.method == truth[call.stream_id].method
            if call.response is not None and call.incomplete_reason is None:
                assert call.response == truth[call.stream_id].response


@pytest.mark.parametrize("side", ["client", "server"])
def test_grpc_go_client_capture(side: str) -> None:
    calls, decoder = decode(chunks(CTR_READS, CTR_BYTES, side))
    assert len(calls) == 1
    call = calls[0]
    assert call.path == "/containerd.services.containers.v1.Containers/ListStream"
    assert call.method_resolution == "decoded" and call.request is None  # not a CRI method
    assert call.user_agent == "grpc-go/1.33.3" and call.grpc_status == 0
    assert call.response_bytes > 40_000 and call.incomplete_reason is None
    assert decoder.stats.errors == {"unknown_method": 1}
